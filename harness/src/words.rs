//! Counts in sentences people read: "1 case", "2 cases", never "1 cases".

/// `n` and the noun in the number that agrees with it: `count(1, "case", "cases")` is
/// `1 case`, `count(0, "case", "cases")` is `0 cases`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// [`count`] for a `usize` (lengths, indexes), which has no `Into<u64>`.
pub fn count_usize(n: usize, one: &str, many: &str) -> String {
    count(n as u64, one, many)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_everything_else_plural() {
        assert_eq!(count(0u32, "case", "cases"), "0 cases");
        assert_eq!(count(1u32, "case", "cases"), "1 case");
        assert_eq!(count_usize(257, "case", "cases"), "257 cases");
        assert_eq!(
            count(1u64, "byte differs", "bytes differ"),
            "1 byte differs"
        );
    }
}
