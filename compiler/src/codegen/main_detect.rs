
/// `detect IMAGE... [--out ANNOTATED.png | --out-dir DIR] [--json] [--score-threshold T]
/// [--max-detections N] [--threads N]`. Images go through the network `BATCH` at a time.
/// With one image `--json` prints its detections as an array; with several, an object keyed
/// by each path as given. Prints to stderr the time of the first `detect_batch` call
/// (`detect_ms=`, the model's first call: preprocessing, network, post-processing) and of
/// one forward pass of the network alone (`forward_ms=`, a later, warm call: `detect`
/// cannot be split from outside).
fn detect_cmd(args: &[String]) -> Result<(), String> {
    let mut json = false;
    let mut pairs = Vec::new();
    let mut paths: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--out" | "--out-dir" | "--score-threshold" | "--max-detections" | "--threads" => {
                let v = it.next().ok_or_else(|| format!("`{a}` needs a value\n{USAGE}"))?;
                pairs.push((a.clone(), v.clone()));
            }
            s if s.starts_with("--") => return Err(format!("unknown argument `{a}`\n{USAGE}")),
            p => paths.push(p),
        }
    }
    if paths.is_empty() {
        return Err(format!("detect needs an IMAGE\n{USAGE}"));
    }
    let out = get(&pairs, "--out");
    let out_dir = get(&pairs, "--out-dir").map(Path::new);
    if out.is_some() && out_dir.is_some() {
        return Err("--out and --out-dir exclude each other".into());
    }
    if out.is_some() && paths.len() > 1 {
        return Err(format!("--out names one annotated image; with {} images use --out-dir DIR", paths.len()));
    }
    // Annotated copies: `DIR/<image file stem>.png`, which must not collide.
    let mut targets: Vec<Option<PathBuf>> = vec![out.map(PathBuf::from); paths.len().min(1)];
    if let Some(dir) = out_dir {
        targets = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for p in &paths {
            let stem = Path::new(p).file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned());
            if let Some(prev) = seen.insert(stem.clone(), *p) {
                return Err(format!("{prev} and {p} would both be annotated as {}", dir.join(format!("{stem}.png")).display()));
            }
            targets.push(Some(dir.join(format!("{stem}.png"))));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    targets.resize(paths.len(), None);
    let threshold = match get(&pairs, "--score-threshold") {
        None => 0.4,
        Some(v) => v
            .parse::<f32>()
            .ok()
            .filter(|t| (0.0..=1.0).contains(t))
            .ok_or_else(|| format!("--score-threshold takes a score in [0, 1], got `{v}`"))?,
    };
    let max_detections = number(&pairs, "--max-detections", effdet_model_lib::detect_options().max_detections)?;
    let mut model = Model::try_new().map_err(|e| e.to_string())?;
    model.set_threads(number(&pairs, "--threads", 1)?);
    let mut options = effdet_model_lib::detect_options();
    options.score_threshold = Some(threshold);
    options.max_detections = max_detections;
    let mut detect_ms = None;
    let mut results: Vec<String> = Vec::new();
    let mut found = 0;
    let groups = paths.len().div_ceil(BATCH);
    for (g, (group, targets)) in paths.chunks(BATCH).zip(targets.chunks(BATCH)).enumerate() {
        let mut decoded = Vec::with_capacity(group.len());
        for p in group {
            decoded.push(decode(Path::new(p))?);
        }
        let images: Vec<effdet_model_lib::Image<'_>> = decoded
            .iter()
            .map(|(img, channels, pixels)| effdet_model_lib::Image {
                width: img.width() as usize,
                height: img.height() as usize,
                channels: *channels,
                data: pixels,
            })
            .collect();
        let start = Instant::now();
        let detections = model.detect_batch(&images, &options).map_err(|e| match group {
            [one] => format!("{one}: {e}"),
            _ => e.to_string(),
        })?;
        detect_ms.get_or_insert(start.elapsed().as_secs_f64() * 1e3);
        for (((p, (img, _, _)), dets), target) in group.iter().zip(&decoded).zip(&detections).zip(targets) {
            found += dets.len();
            if json {
                results.push(if paths.len() == 1 {
                    detections_json(dets)
                } else {
                    format!("{}: {}", json_string(p), detections_json(dets))
                });
            }
            if let Some(target) = target {
                let mut canvas = img.to_rgb8();
                for d in dets {
                    draw_detection(&mut canvas, d);
                }
                save_atomically(&canvas, target)?;
            }
        }
        if groups > 1 {
            eprintln!("detect: {}/{} images", (g * BATCH + group.len()), paths.len());
        }
    }
    // The network alone, timed on a warm call with the image-like input `bench` uses (the
    // kernels' speed does not depend on values).
    let input: Vec<f32> = (0..INPUT_SHAPE.iter().product::<usize>()).map(|i| ((i % 251) as f32 / 125.0) - 1.0).collect();
    let start = Instant::now();
    model.forward(&input).map_err(|e| e.to_string())?;
    let forward_ms = start.elapsed().as_secs_f64() * 1e3;
    if json {
        if paths.len() == 1 {
            println!("{}", results[0]);
        } else {
            println!("{{{}}}", results.join(", "));
        }
    }
    let what = if paths.len() == 1 { String::new() } else { format!(" in {} images", paths.len()) };
    eprintln!("{found} detection(s){what} scoring at least {threshold} (at most {max_detections} per image)");
    eprintln!("forward_ms={forward_ms:.3} detect_ms={:.3}", detect_ms.unwrap_or(0.0));
    Ok(())
}

/// An image as the model takes it: grey and RGBA as they are (the model replicates grey
/// and drops alpha); other layouts (16-bit, grey+alpha) as 8-bit RGB.
fn decode(path: &Path) -> Result<(image::DynamicImage, usize, Vec<u8>), String> {
    let decoded = image::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (channels, pixels) = match &decoded {
        image::DynamicImage::ImageLuma8(g) => (1, g.as_raw().clone()),
        image::DynamicImage::ImageRgba8(g) => (4, g.as_raw().clone()),
        other => (3, other.to_rgb8().into_raw()),
    };
    Ok((decoded, channels, pixels))
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `[{"bbox": [x1, y1, x2, y2], "score": s, "class": c, "label": "name"}, ...]`.
fn detections_json(detections: &[effdet_model_lib::Detection]) -> String {
    let items: Vec<String> = detections
        .iter()
        .map(|d| {
            let label = json_string(effdet_model_lib::coco_label(d.class));
            format!(
                "{{\"bbox\": [{}, {}, {}, {}], \"score\": {}, \"class\": {}, \"label\": {label}}}",
                d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3], d.score, d.class
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Writes the image next to `path` first, then renames it into place.
fn save_atomically(img: &image::RgbImage, path: &Path) -> Result<(), String> {
    let format = image::ImageFormat::from_path(path)
        .map_err(|_| format!("{}: unknown image format (use .png or .jpg)", path.display()))?;
    let name = path.file_name().map_or("out".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = img
        .save_with_format(&tmp, format)
        .map_err(|e| format!("{}: {e}", path.display()))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display())));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A colour per class, bright enough for a label on it in black.
fn class_colour(class: u32) -> [u8; 3] {
    let h = class.wrapping_mul(2_654_435_761);
    [128 + (h >> 24) as u8 / 2, 128 + (h >> 16) as u8 / 2, 128 + (h >> 8) as u8 / 2]
}

fn draw_detection(img: &mut image::RgbImage, d: &effdet_model_lib::Detection) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    if w == 0 || h == 0 {
        return;
    }
    let colour = class_colour(d.class);
    let clamp = |v: f32, hi: i64| (v.round() as i64).clamp(0, hi - 1);
    let (x1, y1, x2, y2) = (clamp(d.bbox[0], w), clamp(d.bbox[1], h), clamp(d.bbox[2], w), clamp(d.bbox[3], h));
    let thickness = (w.min(h) / 200).clamp(1, 4);
    let mut put = |x: i64, y: i64, c: [u8; 3]| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            img.put_pixel(x as u32, y as u32, image::Rgb(c));
        }
    };
    for t in 0..thickness {
        for x in x1..=x2 {
            put(x, y1 + t, colour);
            put(x, y2 - t, colour);
        }
        for y in y1..=y2 {
            put(x1 + t, y, colour);
            put(x2 - t, y, colour);
        }
    }
    // The label on a filled band above the box (inside it when the box touches the top).
    let text = format!("{} {:.2}", effdet_model_lib::coco_label(d.class), d.score).to_ascii_uppercase();
    let scale = if w.min(h) >= 300 { 2 } else { 1 };
    let (tw, th) = (text.len() as i64 * 6 * scale + 2, 9 * scale);
    let top = if y1 >= th { y1 - th } else { y1 };
    for y in top..top + th {
        for x in x1..x1 + tw {
            put(x, y, colour);
        }
    }
    for (i, ch) in text.chars().enumerate() {
        let rows = glyph(ch);
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    for sy in 0..scale {
                        for sx in 0..scale {
                            let x = x1 + 1 + (i as i64 * 6 + col) * scale + sx;
                            let y = top + scale + r as i64 * scale + sy;
                            put(x, y, [0, 0, 0]);
                        }
                    }
                }
            }
        }
    }
}

/// A 5×7 bitmap glyph (rows top to bottom, bit 4 = left column) for the characters labels
/// use; anything else draws as a blank.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '/' => [0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        _ => [0; 7],
    }
}
