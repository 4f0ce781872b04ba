//! COCO class names for the detector's 1-based class ids.
//!
//! The released EfficientDet checkpoints use the 90-id COCO label space (the ids of the
//! original annotation files), of which 80 are used; the 10 ids without annotations keep their
//! slot so that class `c` is always `COCO_LABELS[c - 1]`.

/// Names of COCO ids `1..=90` (index `id - 1`); `"N/A"` for the 10 unused ids
/// 12, 26, 29, 30, 45, 66, 68, 69, 71 and 83.
pub const COCO_LABELS: [&str; 90] = [
    "person",         // 1
    "bicycle",        // 2
    "car",            // 3
    "motorcycle",     // 4
    "airplane",       // 5
    "bus",            // 6
    "train",          // 7
    "truck",          // 8
    "boat",           // 9
    "traffic light",  // 10
    "fire hydrant",   // 11
    "N/A",            // 12
    "stop sign",      // 13
    "parking meter",  // 14
    "bench",          // 15
    "bird",           // 16
    "cat",            // 17
    "dog",            // 18
    "horse",          // 19
    "sheep",          // 20
    "cow",            // 21
    "elephant",       // 22
    "bear",           // 23
    "zebra",          // 24
    "giraffe",        // 25
    "N/A",            // 26
    "backpack",       // 27
    "umbrella",       // 28
    "N/A",            // 29
    "N/A",            // 30
    "handbag",        // 31
    "tie",            // 32
    "suitcase",       // 33
    "frisbee",        // 34
    "skis",           // 35
    "snowboard",      // 36
    "sports ball",    // 37
    "kite",           // 38
    "baseball bat",   // 39
    "baseball glove", // 40
    "skateboard",     // 41
    "surfboard",      // 42
    "tennis racket",  // 43
    "bottle",         // 44
    "N/A",            // 45
    "wine glass",     // 46
    "cup",            // 47
    "fork",           // 48
    "knife",          // 49
    "spoon",          // 50
    "bowl",           // 51
    "banana",         // 52
    "apple",          // 53
    "sandwich",       // 54
    "orange",         // 55
    "broccoli",       // 56
    "carrot",         // 57
    "hot dog",        // 58
    "pizza",          // 59
    "donut",          // 60
    "cake",           // 61
    "chair",          // 62
    "couch",          // 63
    "potted plant",   // 64
    "bed",            // 65
    "N/A",            // 66
    "dining table",   // 67
    "N/A",            // 68
    "N/A",            // 69
    "toilet",         // 70
    "N/A",            // 71
    "tv",             // 72
    "laptop",         // 73
    "mouse",          // 74
    "remote",         // 75
    "keyboard",       // 76
    "cell phone",     // 77
    "microwave",      // 78
    "oven",           // 79
    "toaster",        // 80
    "sink",           // 81
    "refrigerator",   // 82
    "N/A",            // 83
    "book",           // 84
    "clock",          // 85
    "vase",           // 86
    "scissors",       // 87
    "teddy bear",     // 88
    "hair drier",     // 89
    "toothbrush",     // 90
];

/// Name of the 1-based COCO class id `class` (as in [`crate::Detection::class`]); `"N/A"` for
/// the unused ids and for anything outside `1..=90`.
pub fn coco_label(class: u32) -> &'static str {
    usize::try_from(class)
        .ok()
        .and_then(|c| c.checked_sub(1))
        .and_then(|i| COCO_LABELS.get(i))
        .copied()
        .unwrap_or("N/A")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eighty_names_at_official_ids() {
        let unused: Vec<u32> = (1..=90).filter(|&c| coco_label(c) == "N/A").collect();
        assert_eq!(unused, [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]);
        let mut names: Vec<&str> = COCO_LABELS
            .iter()
            .copied()
            .filter(|&n| n != "N/A")
            .collect();
        assert_eq!(names.len(), 80);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 80, "names are unique");
    }

    #[test]
    fn spot_checks() {
        assert_eq!(coco_label(1), "person");
        assert_eq!(coco_label(9), "boat");
        assert_eq!(coco_label(13), "stop sign");
        assert_eq!(coco_label(44), "bottle");
        assert_eq!(coco_label(67), "dining table");
        assert_eq!(coco_label(72), "tv");
        assert_eq!(coco_label(84), "book");
        assert_eq!(coco_label(90), "toothbrush");
    }

    #[test]
    fn out_of_range_ids() {
        assert_eq!(coco_label(0), "N/A");
        assert_eq!(coco_label(91), "N/A");
        assert_eq!(coco_label(u32::MAX), "N/A");
    }
}
