//! The YAML compound-scaling spec front end.
//!
//! [`load`] reads and validates a spec file, [`resolve::resolve`] applies the EfficientNet
//! scaling rules to it, and [`lower::lower`] builds the IR graph with effdet's parameter names.

pub mod bifpn;
pub mod lower;
pub mod resolve;
pub mod schema;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

pub use schema::Spec;

/// A problem with a spec file, located by file, line and column where the file has a place
/// for it.
#[derive(Debug, thiserror::Error)]
pub struct SpecError {
    pub path: PathBuf,
    /// 1-based line and column; `None` when the problem has no single place in the file.
    pub location: Option<(u64, u64)>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.path.display(), self.message)
            }
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl SpecError {
    fn at(path: &Path, location: Location, message: impl Into<String>) -> Self {
        SpecError {
            path: path.to_path_buf(),
            location: (location != Location::UNKNOWN).then(|| (location.line(), location.column())),
            message: message.into(),
        }
    }
}

/// A loaded spec plus the warnings it earned (rules every official variant follows that
/// this spec breaks).
#[derive(Debug)]
pub struct Loaded {
    pub spec: Spec,
    pub warnings: Vec<String>,
}

/// Reads, parses and validates the spec at `path`.
pub fn load(path: &Path) -> Result<Loaded, SpecError> {
    let bytes = std::fs::read(path).map_err(|e| SpecError {
        path: path.to_path_buf(),
        location: None,
        message: format!("cannot read the spec: {e}"),
    })?;
    parse(path, &bytes)
}

/// Parses and validates spec text; `path` is used in messages only.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Loaded, SpecError> {
    let plain = |message: String| SpecError {
        path: path.to_path_buf(),
        location: None,
        message,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(plain("the spec is empty (expected a YAML mapping with `spec_version: 1`, `name`, `input`, `backbone`, `fpn`, `head`, `anchors`)".into()));
    }
    if bytes.contains(&0) {
        return Err(plain("this is a binary file, not a YAML spec".into()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        plain(format!(
            "not UTF-8 text (invalid byte at offset {}): a spec is a YAML file",
            e.valid_up_to()
        ))
    })?;
    let spec: Spec = serde_saphyr::from_str(text).map_err(|e| {
        let location = e.location().unwrap_or(Location::UNKNOWN);
        let mut message = yaml_message(&e);
        if let Some(kind) = message.strip_prefix("invalid ") {
            // The parser says only "invalid u32"; say what was expected and what was found.
            let expected = match kind {
                "u32" | "u64" | "usize" => "a non-negative integer",
                "f32" | "f64" => "a number",
                "bool" => "true or false",
                other => other,
            };
            message = format!("expected {expected}, found `{}`", token_at(text, location));
        }
        SpecError::at(path, location, message)
    })?;
    let mut spec = spec;
    if let Some(ratios) = spec.anchors.ratios.take() {
        // keras-retinanet's height/width ratios as effdet's (x, y) multipliers.
        if ratios.value.is_empty() || ratios.value.iter().any(|&r| !positive(r) || r > 10_000.0) {
            return Err(SpecError::at(
                path,
                ratios.referenced,
                "anchors.ratios must be a non-empty list of height/width ratios in (0, 10000]",
            ));
        }
        spec.anchors.aspect_ratios = Spanned {
            value: ratios
                .value
                .iter()
                .map(|r| [1.0 / r.sqrt(), r.sqrt()])
                .collect(),
            referenced: ratios.referenced,
            defined: ratios.defined,
        };
    }
    let warnings = validate(path, &spec)?;
    Ok(Loaded { spec, warnings })
}

/// The parser's message without its rendered snippet or position (we print those our way).
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    // Strip a trailing " at line X column Y" the parser may append.
    match first.find(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

/// A finite number above zero (false for NaN).
fn positive(v: f64) -> bool {
    v > 0.0 && v.is_finite()
}

/// The scalar that starts at `location` (up to a delimiter or comment), for messages.
fn token_at(text: &str, location: Location) -> String {
    let line = text
        .lines()
        .nth((location.line() as usize).saturating_sub(1))
        .unwrap_or("");
    let rest: String = line
        .chars()
        .skip((location.column() as usize).saturating_sub(1))
        .collect();
    let end = rest.find([',', ']', '}', '#']).unwrap_or(rest.len());
    rest[..end].trim().to_string()
}

/// Checks values serde cannot (ranges, relations between fields); returns warnings for
/// rules that hold for every official variant but not for this spec.
fn validate(path: &Path, s: &Spec) -> Result<Vec<String>, SpecError> {
    let err = |loc: Location, msg: String| Err(SpecError::at(path, loc, msg));
    if s.spec_version.value != 1 {
        return err(
            s.spec_version.referenced,
            format!(
                "spec_version {} is not supported (only 1)",
                s.spec_version.value
            ),
        );
    }
    // Every number has a range (specs/README.md lists them): far beyond any official
    // variant, small enough that no size derived from the spec overflows.
    let size = &s.input.image_size;
    if size.value.iter().any(|d| !(1..=MAX_IMAGE_SIDE).contains(d)) {
        return err(
            size.referenced,
            format!(
                "input.image_size {:?} is out of range: each side must be 1..={MAX_IMAGE_SIDE}",
                size.value
            ),
        );
    }
    if let Some(m) = s
        .input
        .mean
        .value
        .iter()
        .find(|v| v.is_nan() || v.abs() > 1000.0)
    {
        return err(
            s.input.mean.referenced,
            format!("input.mean {m} is out of range: -1000..=1000 (0..255 pixel domain)"),
        );
    }
    if let Some(v) = s
        .input
        .std
        .value
        .iter()
        .find(|v| v.is_nan() || **v > 1000.0)
    {
        return err(
            s.input.std.referenced,
            format!("input.std {v} is out of range: (0, 1000]"),
        );
    }
    check_ranges(path, s)?;
    if let Some(std) = s.input.std.value.iter().find(|v| !positive(**v as f64)) {
        return err(
            s.input.std.referenced,
            format!("input.std {std} must be positive"),
        );
    }
    let b = &s.backbone;
    for (name, v) in [
        ("width_coefficient", &b.width_coefficient),
        ("depth_coefficient", &b.depth_coefficient),
    ] {
        if !positive(v.value) {
            return err(
                v.referenced,
                format!("backbone.{name} {} must be positive", v.value),
            );
        }
    }
    if b.depth_divisor.value == 0 {
        return err(
            b.depth_divisor.referenced,
            "backbone.depth_divisor must be positive".into(),
        );
    }
    if b.stem_channels.value == 0 {
        return err(
            b.stem_channels.referenced,
            "backbone.stem_channels must be positive".into(),
        );
    }
    for (name, eps) in [
        ("backbone", &b.bn_eps),
        ("fpn", &s.fpn.bn_eps),
        ("head", &s.head.bn_eps),
    ] {
        if !positive(eps.value) {
            return err(
                eps.referenced,
                format!("{name}.bn_eps {} must be positive", eps.value),
            );
        }
    }
    if let Some(se) = &b.se {
        if !(positive(se.ratio.value) && se.ratio.value <= 1.0) {
            return err(
                se.ratio.referenced,
                format!("backbone.se.ratio {} must be in (0, 1]", se.ratio.value),
            );
        }
    }
    if b.stages.is_empty() {
        return err(Location::UNKNOWN, "backbone.stages is empty".into());
    }
    for (i, st) in b.stages.iter().enumerate() {
        let v = &st.value;
        for (field, value) in [
            ("kernel", v.kernel),
            ("stride", v.stride),
            ("expand", v.expand),
            ("in", v.in_channels),
            ("out", v.out_channels),
            ("repeats", v.repeats),
        ] {
            if value == 0 {
                return err(
                    st.referenced,
                    format!("backbone.stages[{i}].{field} must be positive, got 0"),
                );
            }
        }
    }
    let fpn = &s.fpn;
    let (min, max) = (fpn.min_level.value, fpn.max_level.value);
    if min == 0 {
        return err(
            fpn.min_level.referenced,
            "fpn.min_level must be at least 1".into(),
        );
    }
    if min > max {
        return err(
            fpn.min_level.referenced,
            format!("fpn.min_level {min} is greater than fpn.max_level {max}"),
        );
    }
    if max > 12 {
        return err(
            fpn.max_level.referenced,
            format!("fpn.max_level {max} is beyond any feature map (at most 12)"),
        );
    }
    let taps = &b.taps;
    for (&level, &stage) in &taps.value {
        if stage as usize >= b.stages.len() {
            return err(
                taps.referenced,
                format!(
                    "backbone.taps: level {level} taps stage {stage}, but there are {} stages",
                    b.stages.len()
                ),
            );
        }
    }
    let top_tap = match taps.value.range(min..=max).next_back() {
        Some((&l, _)) => l,
        None => {
            return err(
                taps.referenced,
                format!(
                "backbone.taps has no level between fpn.min_level {min} and fpn.max_level {max}"
            ),
            )
        }
    };
    if let Some(missing) = (min..=top_tap).find(|l| !taps.value.contains_key(l)) {
        return err(
            taps.referenced,
            format!("backbone.taps has no stage for level {missing} (levels {min}..={top_tap} must all be tapped)"),
        );
    }
    for (name, v) in [
        ("fpn.num_filters", &fpn.num_filters),
        ("fpn.cell_repeats", &fpn.cell_repeats),
    ] {
        if v.value == 0 {
            return err(v.referenced, format!("{name} must be positive"));
        }
    }
    if !positive(fpn.fusion_eps) {
        return err(
            Location::UNKNOWN,
            format!("fpn.fusion_eps {} must be positive", fpn.fusion_eps),
        );
    }
    let h = &s.head;
    if h.num_filters.value == 0 {
        return err(
            h.num_filters.referenced,
            "head.num_filters must be positive".into(),
        );
    }
    if h.num_classes.value == 0 {
        return err(
            h.num_classes.referenced,
            "head.num_classes must be positive".into(),
        );
    }
    let a = &s.anchors;
    if a.num_scales.value == 0 {
        return err(
            a.num_scales.referenced,
            "anchors.num_scales must be positive".into(),
        );
    }
    if a.aspect_ratios.value.is_empty()
        || a.aspect_ratios
            .value
            .iter()
            .flatten()
            .any(|v| !positive(*v))
    {
        return err(
            a.aspect_ratios.referenced,
            "anchors.aspect_ratios must be a non-empty list of positive [x, y] pairs".into(),
        );
    }
    if !positive(a.anchor_scale.value) {
        return err(
            a.anchor_scale.referenced,
            format!(
                "anchors.anchor_scale {} must be positive",
                a.anchor_scale.value
            ),
        );
    }
    // The feature map of the highest level must not shrink to nothing.
    let deepest = size.value.iter().map(|&d| {
        let mut d = d as u64;
        for _ in 0..max {
            d = d.div_ceil(2);
        }
        d
    });
    if deepest.clone().any(|d| d == 0) {
        return err(
            size.referenced,
            "input.image_size is too small for fpn.max_level".into(),
        );
    }

    Ok(rule_warnings(s))
}

/// Longest side of the network input.
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// The ranges of the numbers [`validate`] does not check otherwise (see specs/README.md).
fn check_ranges(path: &Path, s: &Spec) -> Result<(), SpecError> {
    let int = |name: &str, v: &Spanned<u32>, lo: u32, hi: u32| {
        if (lo..=hi).contains(&v.value) {
            Ok(())
        } else {
            Err(SpecError::at(
                path,
                v.referenced,
                format!("{name} {} is out of range: {lo}..={hi}", v.value),
            ))
        }
    };
    let real = |name: &str, v: &Spanned<f64>, hi: f64| {
        if positive(v.value) && v.value <= hi {
            Ok(())
        } else {
            Err(SpecError::at(
                path,
                v.referenced,
                format!("{name} {} is out of range: (0, {hi}]", v.value),
            ))
        }
    };
    let plain = |message: String| {
        Err(SpecError {
            path: path.to_path_buf(),
            location: None,
            message,
        })
    };
    let b = &s.backbone;
    real("backbone.width_coefficient", &b.width_coefficient, 8.0)?;
    real("backbone.depth_coefficient", &b.depth_coefficient, 8.0)?;
    int("backbone.depth_divisor", &b.depth_divisor, 1, 1024)?;
    int("backbone.stem_channels", &b.stem_channels, 1, 4096)?;
    if b.min_depth.is_some_and(|m| m > 4096) {
        return plain(format!(
            "backbone.min_depth {} is out of range: 0..=4096",
            b.min_depth.unwrap_or(0)
        ));
    }
    for (name, eps) in [
        ("backbone.bn_eps", &b.bn_eps),
        ("fpn.bn_eps", &s.fpn.bn_eps),
        ("head.bn_eps", &s.head.bn_eps),
    ] {
        real(name, eps, 1.0)?;
    }
    if b.stages.len() > 32 {
        return plain(format!(
            "backbone.stages has {} stages; at most 32",
            b.stages.len()
        ));
    }
    for (i, st) in b.stages.iter().enumerate() {
        let v = &st.value;
        for (field, value, hi) in [
            ("kernel", v.kernel, 15),
            ("stride", v.stride, 8),
            ("expand", v.expand, 32),
            ("in", v.in_channels, 4096),
            ("out", v.out_channels, 4096),
            ("repeats", v.repeats, 64),
        ] {
            if !(1..=hi).contains(&value) {
                return Err(SpecError::at(
                    path,
                    st.referenced,
                    format!("backbone.stages[{i}].{field} {value} is out of range: 1..={hi}"),
                ));
            }
        }
    }
    let f = &s.fpn;
    int("fpn.num_filters", &f.num_filters, 1, 4096)?;
    int("fpn.cell_repeats", &f.cell_repeats, 1, 32)?;
    if !(positive(f.fusion_eps) && f.fusion_eps <= 1.0) {
        return plain(format!(
            "fpn.fusion_eps {} is out of range: (0, 1]",
            f.fusion_eps
        ));
    }
    let h = &s.head;
    int("head.repeats", &h.repeats, 0, 32)?;
    int("head.num_filters", &h.num_filters, 1, 4096)?;
    int("head.num_classes", &h.num_classes, 1, 10_000)?;
    let a = &s.anchors;
    int("anchors.num_scales", &a.num_scales, 1, 16)?;
    real("anchors.anchor_scale", &a.anchor_scale, 1000.0)?;
    let ratios = &a.aspect_ratios;
    if ratios.value.len() > 32
        || ratios
            .value
            .iter()
            .flatten()
            .any(|v| v.is_nan() || *v > 100.0)
    {
        return Err(SpecError::at(
            path,
            ratios.referenced,
            "anchors.aspect_ratios: at most 32 pairs, each value in (0, 100]",
        ));
    }
    let p = &s.postprocess;
    if !(1..=1_000_000_000).contains(&p.pre_nms_topk) {
        return plain(format!(
            "postprocess.pre_nms_topk {} is out of range: 1..=1000000000",
            p.pre_nms_topk
        ));
    }
    if !(1..=100_000).contains(&p.max_detections) {
        return plain(format!(
            "postprocess.max_detections {} is out of range: 1..=100000",
            p.max_detections
        ));
    }
    if !(0.0..=1.0).contains(&p.nms.iou_threshold) {
        return plain(format!(
            "postprocess.nms.iou_threshold {} is out of range: [0, 1]",
            p.nms.iou_threshold
        ));
    }
    if !(p.nms.sigma > 0.0 && p.nms.sigma <= 10.0) {
        return plain(format!(
            "postprocess.nms.sigma {} is out of range: (0, 10]",
            p.nms.sigma
        ));
    }
    Ok(())
}

/// Rules every official variant follows; breaking one is allowed but probably a mistake.
fn rule_warnings(s: &Spec) -> Vec<String> {
    let mut w = Vec::new();
    let line = |v: &Location| {
        if *v == Location::UNKNOWN {
            String::new()
        } else {
            format!(" (line {})", v.line())
        }
    };
    if let Some(phi) = s.phi {
        let expected = 3 + phi / 3;
        if s.head.repeats.value != expected {
            w.push(format!(
                "head.repeats is {}{} but every official variant has 3 + floor(phi/3) = {expected}",
                s.head.repeats.value,
                line(&s.head.repeats.referenced)
            ));
        }
    }
    if s.head.num_filters.value != s.fpn.num_filters.value {
        w.push(format!(
            "head.num_filters {}{} differs from fpn.num_filters {}; every official variant uses the BiFPN width",
            s.head.num_filters.value,
            line(&s.head.num_filters.referenced),
            s.fpn.num_filters.value
        ));
    }
    if let Some((wc, dc)) = official_coefficients(&s.backbone.variant) {
        let b = &s.backbone;
        if (b.width_coefficient.value - wc).abs() > 1e-9
            || (b.depth_coefficient.value - dc).abs() > 1e-9
        {
            w.push(format!(
                "backbone.variant {} has width/depth coefficients ({wc}, {dc}), the spec says ({}, {}){}",
                b.variant,
                b.width_coefficient.value,
                b.depth_coefficient.value,
                line(&b.width_coefficient.referenced)
            ));
        }
    }
    let lite = s.backbone.kind == schema::BackboneKind::EfficientnetLite;
    if lite != s.backbone.fix_stem_and_edge_stages {
        w.push(format!(
            "backbone.fix_stem_and_edge_stages is {} but every official {} backbone has {}",
            s.backbone.fix_stem_and_edge_stages,
            if lite {
                "EfficientNet-Lite"
            } else {
                "EfficientNet"
            },
            lite
        ));
    }
    if lite && s.backbone.se.is_some() {
        w.push("backbone.se is set but EfficientNet-Lite backbones have no squeeze-excite".into());
    }
    w
}

/// Width and depth coefficients of the official backbones (reference §2.1).
pub fn official_coefficients(variant: &str) -> Option<(f64, f64)> {
    Some(match variant {
        "b0" | "lite0" => (1.0, 1.0),
        "b1" | "lite1" => (1.0, 1.1),
        "b2" | "lite2" => (1.1, 1.2),
        "b3" => (1.2, 1.4),
        "lite3" => (1.2, 1.4),
        "b4" | "lite4" => (1.4, 1.8),
        "b5" => (1.6, 2.2),
        "b6" => (1.8, 2.6),
        "b7" => (2.0, 3.1),
        _ => return None,
    })
}

/// Where a spanned value sits, for messages about it.
pub fn place<T>(v: &Spanned<T>) -> Option<(u64, u64)> {
    (v.referenced != Location::UNKNOWN).then(|| (v.referenced.line(), v.referenced.column()))
}
