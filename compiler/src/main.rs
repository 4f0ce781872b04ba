//! `effdetc`: the effdet command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

use effdet_compiler::budget::{self, Limits};
use effdet_compiler::compile::{self, BuildRequest, TuningChoice, WeightsChoice};
use effdet_compiler::detection::{self, DetectionSettings};
use effdet_compiler::model::{self, LoadOptions, Model, Source};
use effdet_compiler::passes::{self, PassSet};
use effdet_compiler::progress::Progress;
use effdet_compiler::report::Report;
use effdet_compiler::{interp, npy, weights};

#[derive(Parser)]
#[command(name = "effdetc", version, about = "EfficientDet model compiler", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's input shape, parameter count, conv MACs and op counts.
    Inspect {
        /// A YAML spec (`specs/d0.yaml`) or an ONNX file.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also write the IR as a Graphviz graph to this file.
        #[arg(long, value_name = "FILE")]
        dot: Option<PathBuf>,
        #[command(flatten)]
        shape: ShapeArgs,
        /// Report `ops_fused` after only these passes (comma-separated) instead of all.
        #[arg(long, value_name = "LIST")]
        passes: Option<String>,
        /// Run no pass: `ops_fused` equals `ops`.
        #[arg(long, conflicts_with = "passes")]
        no_fuse: bool,
    },
    /// Run the model on the reference interpreter and write one `.npy` per output.
    Run {
        /// A YAML spec (`specs/d0.yaml`) or an ONNX file.
        model: PathBuf,
        /// The `state_dict` with effdet's parameter names (specs only): safetensors, or a PyTorch
        /// checkpoint (`.pth`/`.pt`, a bare state_dict or a training checkpoint holding one).
        #[arg(long, value_name = "FILE")]
        weights: Option<PathBuf>,
        /// The input: an `[N, 3, H, W]` float32 `.npy` (N = --batch, default 1), already normalized.
        #[arg(long, value_name = "IN.npy")]
        input: PathBuf,
        /// Directory for the outputs (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        #[command(flatten)]
        shape: ShapeArgs,
    },
    /// Compile a model into a standalone crate of specialized Rust code.
    Build {
        /// A YAML spec (`specs/d0.yaml`) or an ONNX file.
        model: PathBuf,
        /// The `state_dict` with effdet's parameter names (specs): safetensors, or a PyTorch
        /// checkpoint (`.pth`/`.pt`, a bare state_dict or a training checkpoint holding one).
        #[arg(long, value_name = "FILE", conflicts_with = "random_weights")]
        weights: Option<PathBuf>,
        /// Deterministic random weights from SEED: for benchmarks and compile tests only.
        #[arg(long, value_name = "SEED")]
        random_weights: Option<u64>,
        /// Output directory [default: generated/<name>].
        #[arg(short = 'o', long = "out", value_name = "DIR")]
        out: Option<PathBuf>,
        /// Crate (and binary) name [default: effdet-<file stem>].
        #[arg(long, value_name = "CRATE")]
        name: Option<String>,
        /// Run no fusion pass (the unfused graph, op for op).
        #[arg(long, conflicts_with = "passes")]
        no_fuse: bool,
        /// Comma-separated passes to run instead of all of them.
        #[arg(long, value_name = "LIST")]
        passes: Option<String>,
        #[command(flatten)]
        shape: ShapeArgs,
        /// Embed packed weights up to this many MiB; larger ones are read from weights.bin at run time.
        #[arg(long, value_name = "MIB", default_value_t = 64)]
        embed_limit_mib: usize,
        /// For an ONNX model: a spec whose anchors, classes, normalization and NMS give the
        /// crate `Model::detect` (head outputs named `class_P<level>` / `box_P<level>`).
        #[arg(long, value_name = "SPEC.yaml")]
        detect_spec: Option<PathBuf>,
        /// Add a C ABI (`src/c_api.rs`) and header (`include/<lib>.h`); the crate is then
        /// also built as a static library.
        #[arg(long)]
        c_api: bool,
        /// Add a Python binding: a PyO3 extension module (`src/python.rs`, feature `python`)
        /// and a `pyproject.toml` for maturin, so `pip install DIR` gives `import <lib>`.
        #[arg(long)]
        python: bool,
        /// Time candidate blockings of each distinct 1×1 conv shape on this machine (one
        /// thread) and bake the fastest in; the choices go to `tuning.json` in the crate.
        #[arg(long, conflicts_with = "tuning")]
        tune: bool,
        /// Apply the choices of a `tuning.json` (from an earlier `--tune`) without timing.
        #[arg(long, value_name = "FILE")]
        tuning: Option<PathBuf>,
    },
    /// Run effdet's post-processing (top-k, decode, NMS) on raw head outputs saved as `.npy`.
    Postprocess {
        /// The spec that says the anchors, classes and NMS settings (`specs/d0.yaml`).
        model: PathBuf,
        /// Directory with `class_P<l>.npy` and `box_P<l>.npy` (as `effdetc run` writes them).
        #[arg(long, value_name = "DIR")]
        outputs_dir: PathBuf,
        /// Where to write the `[N, 6]` float32 rows `x1, y1, x2, y2, score, class`.
        #[arg(long, value_name = "DETS.npy")]
        out: PathBuf,
        /// Also print the detections as JSON to stdout.
        #[arg(long)]
        json: bool,
        /// Keep only detections scoring at least this.
        #[arg(long, value_name = "T")]
        score_threshold: Option<f32>,
    },
}

/// How a model is loaded: its input shape and batch, and the resource budget.
#[derive(clap::Args, Default)]
struct ShapeArgs {
    /// Input shape of an ONNX model whose graph leaves it open, e.g. `1,3,512,512`.
    #[arg(long, value_name = "N,C,H,W", value_parser = parse_shape)]
    input_shape: Option<Vec<usize>>,
    /// Images per forward pass: the input becomes `[N, 3, H, W]` and every output `[N, ...]`
    /// (an ONNX model's symbolic batch dimension is set to N) [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    batch: Option<u64>,
    /// Memory budget in MiB, for each of: the parameters, constant folding (a sixteenth),
    /// the interpreter's peak (`run`), the arena and the packed weights (`build`) [default: 4096].
    #[arg(long, value_name = "MIB")]
    max_memory_mib: Option<u64>,
    /// Budget of conv multiply-accumulates per forward pass, in G [default: 2000].
    #[arg(long, value_name = "G")]
    max_gmacs: Option<u64>,
}

impl ShapeArgs {
    fn limits(&self) -> Result<Limits> {
        Ok(Limits::with(self.max_memory_mib, self.max_gmacs)?)
    }
}

fn parse_shape(s: &str) -> Result<Vec<usize>, String> {
    let dims: Result<Vec<usize>, _> = s.split(',').map(|d| d.trim().parse::<usize>()).collect();
    match dims {
        Ok(d) if !d.is_empty() && !d.contains(&0) => Ok(d),
        _ => Err(format!(
            "`{s}` is not a shape: write positive dimensions separated by commas, e.g. 1,3,512,512"
        )),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn load(path: &Path, shape: &ShapeArgs, limits: Limits) -> Result<Model> {
    let model = model::load(
        path,
        &LoadOptions {
            input_shape: shape.input_shape.clone(),
            batch: shape.batch.map(|b| b as usize),
            limits,
        },
    )?;
    for w in &model.warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
    Ok(model)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect {
            model,
            json,
            dot,
            shape,
            passes,
            no_fuse,
        } => {
            let limits = shape.limits()?;
            let set = match (no_fuse, passes) {
                (true, _) => PassSet::none(),
                (false, Some(list)) => PassSet::parse(&list)?,
                (false, None) => PassSet::all(),
            };
            let m = load(&model, &shape, limits)?;
            // The passes rewrite structure without weights, so a spec needs none here.
            let mut fused = m.graph.clone();
            let done = passes::run(&mut fused, &set)?;
            if !done.converged {
                eprintln!(
                    "warning: the passes did not reach a fixed point in {} rounds",
                    done.rounds
                );
            }
            let report = Report::of(&m.graph).with_fused(&fused);
            if let Some(dot) = dot {
                write_atomically(&dot, m.graph.to_dot().as_bytes())?;
            }
            if json {
                print_stdout(&format!("{}\n", report.to_json()));
            } else {
                print_stdout(&report.to_text());
            }
            Ok(())
        }
        Command::Run {
            model,
            weights,
            input,
            out_dir,
            shape,
        } => {
            let limits = shape.limits()?;
            let mut m = load(&model, &shape, limits)?;
            budget::check_run(&m.graph, &limits)
                .map_err(|e| format!("{}: {e}", model.display()))?;
            let mut progress = Progress::stderr("effdetc");
            match (&m.source, weights) {
                (Source::Spec { .. }, Some(w)) => {
                    progress.step(&format!("reading weights {}", w.display()));
                    weights::bind_file(&mut m.graph, &w, &mut |line| progress.step(line))?
                }
                (Source::Spec { .. }, None) => {
                    return Err(format!(
                        "{}: a spec has no weights: give --weights FILE.safetensors or FILE.pth (a state_dict with effdet's parameter names)",
                        model.display()
                    )
                    .into())
                }
                (Source::Onnx, Some(_)) => {
                    return Err(format!("{}: an ONNX model carries its own weights; --weights is for specs", model.display()).into())
                }
                (Source::Onnx, None) => {}
            }
            let shape = m
                .graph
                .input_shape()
                .map(<[usize]>::to_vec)
                .unwrap_or_default();
            let x = npy::read_f32(&input, &shape)?;
            progress.step(&format!(
                "running {} ({} ops) on the reference interpreter...",
                m.graph.name,
                m.graph.graph.node_count()
            ));
            let start = Instant::now();
            let outputs = interp::run(&m.graph, &[x])?;
            let files = npy::write_outputs(&out_dir, &outputs)
                .map_err(|e| format!("{}: cannot write the outputs: {e}", out_dir.display()))?;
            progress.step(&format!(
                "wrote {} outputs to {} in {:.1} s",
                files.len(),
                out_dir.display(),
                start.elapsed().as_secs_f64()
            ));
            progress.finish();
            Ok(())
        }
        Command::Build {
            model,
            weights,
            random_weights,
            out,
            name,
            no_fuse,
            passes,
            shape,
            embed_limit_mib,
            detect_spec,
            c_api,
            python,
            tune,
            tuning,
        } => {
            let passes = match (no_fuse, passes) {
                (true, _) => PassSet::none(),
                (false, Some(list)) => PassSet::parse(&list)?,
                (false, None) => PassSet::all(),
            };
            let weights = match (weights, random_weights) {
                (Some(w), _) => WeightsChoice::File(w),
                (None, Some(seed)) => WeightsChoice::Random(seed),
                (None, None) => WeightsChoice::Model,
            };
            let req = BuildRequest {
                model,
                weights,
                out_dir: out,
                name,
                passes,
                limits: shape.limits()?,
                input_shape: shape.input_shape,
                batch: shape.batch.map(|b| b as usize),
                embed_limit: embed_limit_mib << 20,
                detect_spec,
                c_api,
                python,
                tuning: match (tune, tuning) {
                    (true, _) => TuningChoice::Tune,
                    (false, Some(f)) => TuningChoice::File(f),
                    (false, None) => TuningChoice::Fixed,
                },
            };
            let mut progress = Progress::stderr("effdetc");
            let built = compile::build(&req, &mut |line| progress.step(line))?;
            progress.finish();
            eprintln!(
                "effdetc: build it with `cargo build --release --manifest-path {}/Cargo.toml`",
                built.dir.display()
            );
            Ok(())
        }
        Command::Postprocess {
            model,
            outputs_dir,
            out,
            json,
            score_threshold,
        } => postprocess(&model, &outputs_dir, &out, json, score_threshold),
    }
}

fn postprocess(
    model: &Path,
    outputs_dir: &Path,
    out: &Path,
    json: bool,
    threshold: Option<f32>,
) -> Result<()> {
    let m = load(model, &ShapeArgs::default(), Limits::default())?;
    let Source::Spec { spec, .. } = &m.source else {
        return Err(format!(
            "{}: post-processing needs a spec (anchors, classes, NMS settings); an ONNX file has none",
            model.display()
        )
        .into());
    };
    let mut settings = DetectionSettings::from_spec(spec);
    if let Some(t) = threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(format!("--score-threshold {t} is not a score in [0, 1]").into());
        }
        settings.options.score_threshold = Some(t);
    }
    let detections = detection::postprocess_dir(&settings, outputs_dir)?;
    let bytes = npy::encode_f32(&detection::as_rows(&detections))?;
    write_atomically(out, &bytes)?;
    if json {
        print_stdout(&format!("{}\n", detection::as_json(&detections)));
    }
    eprintln!(
        "effdetc: {} detections written to {}",
        detections.len(),
        out.display()
    );
    Ok(())
}

/// Prints to stdout; a closed pipe (`effdetc ... | head`) is not an error worth a panic.
fn print_stdout(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Writes `bytes` to `path` through a temporary file and a rename, so `path` is never left
/// half-written.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.effdetc-{}",
        path.file_name()
            .map_or("out".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| format!("{}: cannot write: {e}", path.display()).into())
}
