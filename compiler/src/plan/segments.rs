//! The schedule's segments: consecutive steps of one block of the network, which the code
//! generator prints as one function each, and, for a batch, the loop order of each.

use super::{Kernel, Plan, Step};

/// The step ranges of the maximal runs of consecutive image-major segments: the generated
/// code loops over the images once around each run.
pub fn image_major_runs(segments: &[Segment]) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let mut extend = false;
    for seg in segments {
        match runs.last_mut() {
            Some(r) if extend && seg.image_major => r.end = seg.steps.end,
            _ if seg.image_major => runs.push(seg.steps.clone()),
            _ => {}
        }
        extend = seg.image_major;
    }
    runs
}

/// Consecutive steps printed as one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub steps: std::ops::Range<usize>,
    /// The segment loops over the images, each step working on one image's part of its
    /// tensors (see [`image_major`]); otherwise each step covers the whole batch.
    pub image_major: bool,
}

/// The segments of `plan`'s steps, each with its loop order.
pub fn segments(plan: &Plan) -> Vec<Segment> {
    blocks(&plan.steps)
        .into_iter()
        .map(|seg| Segment {
            image_major: image_major(plan, &seg),
            steps: seg[0]..seg[seg.len() - 1] + 1,
        })
        .collect()
}

/// The block a node belongs to, from its name: everything up to its last numeric path
/// component (`backbone.blocks.1.0.conv_pw` → `backbone.blocks.1.0`), with a head's level
/// suffix kept (`class_net.conv_rep.0.conv_dw@P3` → `class_net@P3`).
pub fn block_key(name: &str) -> String {
    if let Some((path, level)) = name.split_once('@') {
        let net = path
            .split(['.', '/'])
            .find(|c| !c.is_empty())
            .unwrap_or(path);
        return format!("{net}@{level}");
    }
    let mut end = 0;
    let mut pos = 0;
    for part in name.split_inclusive(['.', '/']) {
        let comp = part.trim_end_matches(['.', '/']);
        pos += part.len();
        if !comp.is_empty() && comp.chars().all(|c| c.is_ascii_digit()) {
            end = pos;
        }
    }
    name[..end].trim_end_matches(['.', '/']).to_string()
}

/// Most steps one segment function holds, so no function grows large.
const MAX_SEGMENT: usize = 24;

/// Splits the schedule into segments of consecutive steps of one block.
fn blocks(steps: &[Step]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut key = None;
    for (i, s) in steps.iter().enumerate() {
        let k = block_key(&s.name);
        match out.last_mut() {
            Some(seg) if key.as_ref() == Some(&k) && seg.len() < MAX_SEGMENT => seg.push(i),
            _ => out.push(vec![i]),
        }
        key = Some(k);
    }
    out
}

/// Whether a step can run on one image's part of each of its tensors: a per-image kernel,
/// or one that treats its tensors as flat arrays (1×1 convs, elementwise ops, batch norm),
/// with every tensor holding the whole batch.
fn runs_per_image(plan: &Plan, s: &Step) -> bool {
    let kernel_ok = !matches!(
        s.kernel,
        Kernel::Binary { .. }
            | Kernel::Transpose { .. }
            | Kernel::Concat { .. }
            | Kernel::Reduce { .. }
            | Kernel::Softmax { .. }
            | Kernel::Constant
    );
    kernel_ok
        && s.inputs
            .iter()
            .chain([&s.output])
            .all(|&t| plan.slots[t].shape.first() == Some(&plan.batch))
}

/// How much a segment's tensors (one image) must outweigh its weights for image-major
/// order. Measured on D0 at batch 4 (`tests/bench/batch.sh`, Zen 4): ratios 1, 4 and 16 ran
/// within noise of each other and of batch 1 per image; all batch-inner ran 5–20% slower.
const IMAGE_MAJOR_RATIO: usize = 4;

/// The loop order of a segment for a batch: image-major (the whole segment on image 0,
/// then on image 1, ...) keeps each image's intermediate tensors in cache from one step to
/// the next; batch-inner (each step on every image before the next step) reads each
/// weight once for the batch. Image-major wins where a segment's tensors outweigh its
/// weights (the early, large planes); batch-inner where the weights dominate.
pub(super) fn image_major(plan: &Plan, seg: &[usize]) -> bool {
    if plan.batch <= 1 || !seg.iter().all(|&i| runs_per_image(plan, &plan.steps[i])) {
        return false;
    }
    let activations: usize = seg
        .iter()
        .map(|&i| plan.slots[plan.steps[i].output].len / plan.batch)
        .sum();
    let weights: usize = seg
        .iter()
        .flat_map(|&i| &plan.steps[i].weights)
        .map(|&e| plan.weights[e].len)
        .sum();
    activations > weights.saturating_mul(IMAGE_MAJOR_RATIO)
}

#[cfg(test)]
mod tests {
    use super::block_key;

    #[test]
    fn block_keys() {
        assert_eq!(
            block_key("backbone.blocks.1.0.conv_pw"),
            "backbone.blocks.1.0"
        );
        assert_eq!(
            block_key("backbone.blocks.1.0.se.conv_reduce.act"),
            "backbone.blocks.1.0"
        );
        assert_eq!(
            block_key("fpn.cell.0.fnode.3.after_combine.conv.conv_dw"),
            "fpn.cell.0.fnode.3"
        );
        assert_eq!(block_key("class_net.conv_rep.0.conv_dw@P3"), "class_net@P3");
        assert_eq!(
            block_key("/model/backbone/blocks.1/blocks.1.0/conv_pw/Conv"),
            "/model/backbone/blocks.1/blocks.1.0"
        );
        assert_eq!(block_key("input"), "");
    }
}
