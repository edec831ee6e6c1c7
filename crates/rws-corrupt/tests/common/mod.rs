//! Shared by the test binaries that compare the uint8 paths with the float path.

/// The bound the uint8 paths are held to where they may differ from the float path: ≥ 99.9% of
/// values within ±1 and none off by more than 2; with `exact`, the same bytes.
pub fn assert_paths_agree(fast: &[u8], slow: &[u8], exact: bool, tag: &str) {
    assert_eq!(fast.len(), slow.len(), "{tag}");
    if exact {
        let diff = fast.iter().zip(slow).filter(|(a, b)| a != b).count();
        assert!(diff == 0, "{tag}: {diff} bytes differ from the float path");
        return;
    }
    let within = fast.iter().zip(slow).filter(|(a, b)| (**a as i32 - **b as i32).abs() <= 1).count() as f64 / fast.len() as f64;
    let maxd = fast.iter().zip(slow).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap_or(0);
    assert!(within >= 0.999 && maxd <= 2, "{tag}: {:.4}% within ±1, max diff {maxd}", within * 100.0);
}
