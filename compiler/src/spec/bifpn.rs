//! The node list of one BiFPN cell (reference §3.2), generated from the level range.

/// One fusion node: its pyramid level and the ids of the feature maps it fuses, in the
/// order that indexes its fusion weights. Ids `0..num_levels` are the cell's inputs (levels
/// `min..=max`), then each node gets the next id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusionNode {
    pub level: u32,
    pub inputs: Vec<usize>,
}

/// Top-down nodes from `max − 1` down to `min`, then bottom-up nodes from `min + 1` up to
/// `max`; each bottom-up node fuses every earlier map of its level plus the last map of the
/// level below.
pub fn cell_nodes(min_level: u32, max_level: u32) -> Vec<FusionNode> {
    let num_levels = (max_level - min_level + 1) as usize;
    // Ids of the maps at each level, oldest first.
    let mut at_level: Vec<Vec<usize>> = (0..num_levels).map(|i| vec![i]).collect();
    let mut next_id = num_levels;
    let mut nodes = Vec::new();
    let idx = |level: u32| (level - min_level) as usize;
    for level in (min_level..max_level).rev() {
        let inputs = vec![
            *at_level[idx(level)].last().unwrap_or(&0),
            *at_level[idx(level + 1)].last().unwrap_or(&0),
        ];
        nodes.push(FusionNode { level, inputs });
        at_level[idx(level)].push(next_id);
        next_id += 1;
    }
    for level in min_level + 1..=max_level {
        let mut inputs = at_level[idx(level)].clone();
        inputs.push(*at_level[idx(level - 1)].last().unwrap_or(&0));
        nodes.push(FusionNode { level, inputs });
        at_level[idx(level)].push(next_id);
        next_id += 1;
    }
    nodes
}

/// The ids of the cell's outputs, one per level from `min` to `max`: the last map of each level.
pub fn cell_outputs(min_level: u32, max_level: u32) -> Vec<usize> {
    let nodes = cell_nodes(min_level, max_level);
    let num_levels = (max_level - min_level + 1) as usize;
    (min_level..=max_level)
        .map(|level| {
            nodes
                .iter()
                .rposition(|n| n.level == level)
                .map_or(level as usize - min_level as usize, |j| num_levels + j)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_3_to_7_match_the_reference_table() {
        let inputs: Vec<Vec<usize>> = cell_nodes(3, 7).into_iter().map(|n| n.inputs).collect();
        let expected: Vec<Vec<usize>> = vec![
            vec![3, 4],
            vec![2, 5],
            vec![1, 6],
            vec![0, 7],
            vec![1, 7, 8],
            vec![2, 6, 9],
            vec![3, 5, 10],
            vec![4, 11],
        ];
        assert_eq!(inputs, expected);
        assert_eq!(cell_outputs(3, 7), vec![8, 9, 10, 11, 12]);
    }

    #[test]
    fn levels_3_to_8_match_the_reference_table() {
        let nodes = cell_nodes(3, 8);
        let levels: Vec<u32> = nodes.iter().map(|n| n.level).collect();
        assert_eq!(levels, [7, 6, 5, 4, 3, 4, 5, 6, 7, 8]);
        assert_eq!(nodes[5].inputs, [1, 9, 10]);
        assert_eq!(nodes[8].inputs, [4, 6, 13]);
        assert_eq!(nodes[9].inputs, [5, 14]);
        assert_eq!(cell_outputs(3, 8), vec![10, 11, 12, 13, 14, 15]);
    }
}
