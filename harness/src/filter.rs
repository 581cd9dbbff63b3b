//! `--filter GLOB`: choosing cases by name (`group/name`, as `runner::collect_named` gives it) before
//! anything is loaded, so a filtered run neither validates nor forks the rest.
//!
//! Glob syntax: `*` matches any run of characters, `/` included (`*writev*` finds writev cases
//! in every group); `?` matches one character; every other character matches itself. The whole
//! name must match (`eperm` alone matches nothing; `eperm/*` is the group). Several filters OR
//! together.

use crate::runner::Found;

/// Whether `name` matches `pattern` (see the module doc for the syntax).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    wildcard(pattern, name, true)
}

/// Shell-style wildcard match of the whole `text`: `*` is any run of characters and `?` one
/// character; with `cross_slash` false neither matches a `/` (kernel-matrix's package paths:
/// `boot/vmlinuz-*` must not reach into a subdirectory).
pub fn wildcard(pattern: &str, text: &str, cross_slash: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let wild = |c: char| cross_slash || c != '/';
    // Iterative matching: remember the last `*` and the text position it resumed at, and on a
    // mismatch let that star swallow one more character (no recursion on odd input).
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == t[ti] || (p[pi] == '?' && wild(t[ti]))) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            if !wild(t[st]) {
                return false;
            }
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The files whose case name matches any of `filters` (all of them when there are none). A
/// filter that matches no case is an error (most likely a typo): its message is one line
/// naming the filter and the syntax.
pub fn select(files: Vec<Found>, filters: &[String]) -> Result<Vec<Found>, String> {
    if filters.is_empty() {
        return Ok(files);
    }
    let ids: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    for f in filters {
        if !ids.iter().any(|id| glob_match(f, id)) {
            let example = ids
                .first()
                .map_or("eperm/caller_gid_differs", String::as_str);
            return Err(format!(
                "--filter '{f}' matches none of the {} cases (names look like '{example}'; `*` matches any characters, `/` included, `?` one character, and the whole name must match: try 'group/*' or '*word*')",
                ids.len()
            ));
        }
    }
    Ok(files
        .into_iter()
        .zip(ids)
        .filter(|(_, id)| filters.iter().any(|f| glob_match(f, id)))
        .map(|(f, _)| f)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("eperm/*", "eperm/caller_gid_differs", true),
            ("eperm/*", "einval/flags_1", false),
            ("eperm", "eperm/caller_gid_differs", false),
            ("*writev*", "compat/basic_writev", true),
            ("*writev*", "writev/self_target", true),
            ("*writev", "writev/self_target", false),
            ("*/flags_?", "einval/flags_1", true),
            ("*/flags_?", "einval/flags_12", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("**x", "abx", true),
            ("exact/name", "exact/name", true),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} ~ {n}");
        }
    }

    #[test]
    fn select_ors_filters_and_rejects_a_filter_that_matches_nothing() {
        let files: Vec<Found> = ["a/x", "a/y", "b/x"]
            .iter()
            .map(|n| Found {
                path: format!("cases/{n}.yaml").into(),
                name: n.to_string(),
            })
            .collect();
        let got = select(files.clone(), &["a/x".into(), "b/*".into()]).unwrap();
        assert_eq!(got, vec![files[0].clone(), files[2].clone()]);
        assert_eq!(select(files.clone(), &[]).unwrap(), files);
        let e = select(files, &["a/*".into(), "c/*".into()]).unwrap_err();
        assert!(
            e.starts_with("--filter 'c/*' matches none of the 3 cases"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}
