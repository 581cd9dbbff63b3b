//! kernels.yaml: which Debian packages make up the matrix. The file is a YAML list of
//! [`KernelEntry`]; the crate ships one (`builtin()`), and a user may pass their own.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{Error, Result};

/// One kernel of the matrix, as written in kernels.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelEntry {
    /// "MAJOR.MINOR", e.g. "6.1"; unique within the file.
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    /// Debian suite, e.g. "bookworm".
    pub suite: String,
    /// Glob over binary package names; the newest matching version wins.
    pub package: String,
    /// Optional glob over the Debian version: only versions matching it are candidates (a
    /// runtime row pins its upstream release this way, e.g. "0.0~20240729.*").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Glob over paths inside the package (without "./") matching exactly one file.
    pub image: String,
    /// Optional glob for the kernel config inside the same package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

const BUILTIN_YAML: &str = include_str!("../kernels.yaml");

/// The crate's own kernels.yaml.
pub fn builtin() -> Vec<KernelEntry> {
    // The file is compiled in and covered by a unit test, so failing here is a build bug, not
    // bad input.
    parse(BUILTIN_YAML, "kernel-matrix/kernels.yaml (built in)")
        .unwrap_or_else(|e| panic!("built-in kernels.yaml is invalid: {e}"))
}

/// Reads and validates a kernels.yaml.
pub fn load(path: &Path) -> Result<Vec<KernelEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(format!(
            "cannot read kernels file {}: {e} (check the path, or omit it to use the built-in list)",
            path.display()
        ))
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates kernels.yaml text; `source` names the file in errors.
pub fn parse(text: &str, source: &str) -> Result<Vec<KernelEntry>> {
    let entries: Vec<KernelEntry> = serde_yaml::from_str(text).map_err(|e| {
        let at = match e.location() {
            Some(l) => format!("{source}:{}", l.line()),
            None => source.to_string(),
        };
        Error::new(format!(
            "{at}: {e} (each entry is a mapping with id, suite, package, image and optional config, description)"
        ))
    })?;
    validate(&entries, text, source)?;
    Ok(entries)
}

fn validate(entries: &[KernelEntry], text: &str, source: &str) -> Result<()> {
    if entries.is_empty() {
        return Err(Error::new(format!(
            "{source}: no kernels listed (add at least one entry with id, suite, package, image)"
        )));
    }
    let starts = entry_start_lines(text);
    let at = |i: usize, field: &str| -> String {
        match field_line(text, &starts, i, field) {
            Some(line) => format!("{source}:{line}"),
            None => format!("{source} (entry {})", i + 1),
        }
    };
    for (i, e) in entries.iter().enumerate() {
        if !is_series(&e.id) {
            return Err(Error::new(format!(
                "{}: kernel id '{}' is not MAJOR.MINOR (write it like \"6.1\", quoted)",
                at(i, "id"),
                e.id
            )));
        }
        if let Some(j) = entries[..i].iter().position(|p| p.id == e.id) {
            return Err(Error::new(format!(
                "{}: kernel id '{}' is listed twice (also entry {}); ids must be unique",
                at(i, "id"),
                e.id,
                j + 1
            )));
        }
        let bad_name = |s: &str| s.is_empty() || s.chars().any(|c| c == '/' || c.is_whitespace());
        if bad_name(&e.suite) {
            return Err(Error::new(format!(
                "{}: kernel {}: suite '{}' must be a Debian suite name like bookworm",
                at(i, "suite"),
                e.id,
                e.suite
            )));
        }
        if bad_name(&e.package) {
            return Err(Error::new(format!(
                "{}: kernel {}: package glob '{}' must be a non-empty package name pattern like linux-image-6.1.0-*-cloud-amd64-unsigned",
                at(i, "package"),
                e.id,
                e.package
            )));
        }
        let globs = [("image", Some(&e.image)), ("config", e.config.as_ref())];
        for (field, glob) in globs {
            let Some(glob) = glob else { continue };
            if glob.is_empty()
                || glob.starts_with('/')
                || glob.starts_with("./")
                || glob.ends_with('/')
                || glob.chars().any(char::is_whitespace)
            {
                return Err(Error::new(format!(
                    "{}: kernel {}: {field} glob '{glob}' must be a file path inside the package without a leading / or ./, like boot/vmlinuz-*",
                    at(i, field),
                    e.id
                )));
            }
        }
    }
    Ok(())
}

/// Finds an entry by id.
pub fn find<'a>(entries: &'a [KernelEntry], id: &str) -> Result<&'a KernelEntry> {
    entries.iter().find(|e| e.id == id).ok_or_else(|| {
        let known: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        Error::new(format!(
            "unknown kernel id '{id}' (known: {}; or pass --kernel-image PATH)",
            known.join(", ")
        ))
    })
}

/// "6.1", "5.10": the shape of an id and of an image's series.
pub fn is_series(s: &str) -> bool {
    match s.split_once('.') {
        Some((a, b)) => {
            let digits =
                |x: &str| !x.is_empty() && x.len() <= 4 && x.bytes().all(|c| c.is_ascii_digit());
            digits(a) && digits(b)
        }
        None => false,
    }
}

/// Shell-style match where `*` is any run of characters and `?` one character, neither
/// crossing `/`, so `boot/vmlinuz-*` cannot reach into a subdirectory.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    pvmtest::filter::wildcard(pattern, text, false)
}

// Line numbers for validation errors: serde has forgotten positions by then, so find the
// block-style list items by their "- " at the outermost indentation.
fn entry_start_lines(text: &str) -> Vec<usize> {
    let mut indent = None;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if !(trimmed.starts_with("- ") || trimmed == "-") {
            continue;
        }
        let ind = line.len() - trimmed.len();
        match indent {
            None => {
                indent = Some(ind);
                out.push(n + 1);
            }
            Some(i) if i == ind => out.push(n + 1),
            _ => {}
        }
    }
    out
}

fn field_line(text: &str, starts: &[usize], entry: usize, field: &str) -> Option<usize> {
    let first = *starts.get(entry)?;
    let end = starts.get(entry + 1).copied().unwrap_or(usize::MAX);
    let key = format!("{field}:");
    text.lines()
        .enumerate()
        .skip(first - 1)
        .take_while(|(n, _)| n + 1 < end)
        .find(|(_, l)| l.trim_start().trim_start_matches("- ").starts_with(&key))
        .map(|(n, _)| n + 1)
        .or(Some(first))
}

fn de_id<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a quoted kernel id like \"6.1\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<String, E> {
            Ok(v.to_string())
        }
        // Unquoted 5.10 reaches us as 5.1: refuse numbers instead of guessing.
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<String, E> {
            Err(E::custom(format!(
                "kernel id {v} must be quoted, e.g. id: \"{v}\" (unquoted 5.10 reads as the number 5.1)"
            )))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<String, E> {
            Err(E::custom(format!(
                "kernel id {v} must be a quoted MAJOR.MINOR like \"6.1\""
            )))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<String, E> {
            Err(E::custom(format!(
                "kernel id {v} must be a quoted MAJOR.MINOR like \"6.1\""
            )))
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "- id: \"6.1\"\n  suite: bookworm\n  package: linux-image-6.1.0-*-cloud-amd64-unsigned\n  image: boot/vmlinuz-*\n";

    #[test]
    fn builtin_parses_to_five_entries() {
        let b = builtin();
        let ids: Vec<&str> = b.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["5.10", "6.1", "6.12", "7.2", "7.3"]);
        let k73 = find(&b, "7.3").unwrap();
        assert_eq!(k73.suite, "trixie-backports");
        assert_eq!(k73.image, "usr/lib/modules/*/vmlinuz.unsigned");
        assert!(k73.config.is_none());
        assert_eq!(
            find(&b, "5.10").unwrap().config.as_deref(),
            Some("boot/config-*")
        );
    }

    #[test]
    fn unknown_id_lists_known_ids() {
        let e = find(&builtin(), "6.3").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown kernel id '6.3' (known: 5.10, 6.1, 6.12, 7.2, 7.3; or pass --kernel-image PATH)"
        );
    }

    #[test]
    fn load_reads_a_file_and_names_it_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.yaml");
        std::fs::write(&p, ONE).unwrap();
        assert_eq!(load(&p).unwrap().len(), 1);
        let missing = dir.path().join("nope.yaml");
        let e = load(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.yaml") && e.contains("cannot read"), "{e}");
    }

    fn err(text: &str) -> String {
        let e = parse(text, "k.yaml").unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        e
    }

    #[test]
    fn empty_list_is_an_error() {
        assert!(err("[]").contains("no kernels listed"));
    }

    #[test]
    fn unknown_field_names_file_and_line() {
        let e = err(&format!("{ONE}  flavour: cloud\n"));
        assert!(e.starts_with("k.yaml:5:"), "{e}");
        assert!(e.contains("flavour"), "{e}");
    }

    #[test]
    fn missing_field_is_an_error() {
        let e = err("- id: \"6.1\"\n  suite: bookworm\n  image: boot/vmlinuz-*\n");
        assert!(e.contains("package"), "{e}");
        assert!(e.starts_with("k.yaml"), "{e}");
    }

    #[test]
    fn unquoted_id_is_refused_not_rounded() {
        let e = err(&ONE.replace("\"6.1\"", "5.10"));
        assert!(e.contains("must be quoted"), "{e}");
        assert!(e.starts_with("k.yaml:1:"), "{e}");
    }

    #[test]
    fn bad_id_names_line() {
        let text = format!("{ONE}{}", ONE.replace("\"6.1\"", "\"six\""));
        let e = err(&text);
        assert!(e.starts_with("k.yaml:5:"), "{e}");
        assert!(e.contains("'six' is not MAJOR.MINOR"), "{e}");
    }

    #[test]
    fn duplicate_id_names_second_line() {
        let e = err(&format!("{ONE}{ONE}"));
        assert!(e.starts_with("k.yaml:5:"), "{e}");
        assert!(e.contains("listed twice (also entry 1)"), "{e}");
    }

    #[test]
    fn empty_and_absolute_globs_are_errors() {
        let e = err(&ONE.replace("boot/vmlinuz-*", "\"\""));
        assert!(
            e.starts_with("k.yaml:4:") && e.contains("image glob"),
            "{e}"
        );
        let e = err(&ONE.replace("boot/vmlinuz-*", "/boot/vmlinuz-*"));
        assert!(e.contains("without a leading"), "{e}");
        let e = err(&ONE.replace("linux-image-6.1.0-*-cloud-amd64-unsigned", "\"\""));
        assert!(
            e.starts_with("k.yaml:3:") && e.contains("package glob"),
            "{e}"
        );
        let e = err(&format!("{ONE}  config: \"./boot/config-*\"\n"));
        assert!(
            e.starts_with("k.yaml:5:") && e.contains("config glob"),
            "{e}"
        );
    }

    #[test]
    fn not_a_list_is_an_error() {
        let e = err("id: \"6.1\"\n");
        assert!(e.starts_with("k.yaml"), "{e}");
    }

    #[test]
    fn series_shape() {
        for ok in ["5.10", "6.1", "6.12", "7.3"] {
            assert!(is_series(ok), "{ok}");
        }
        for bad in ["6", "6.", ".1", "6.1.2", "v6.1", "6.x", ""] {
            assert!(!is_series(bad), "{bad}");
        }
    }

    #[test]
    fn glob_semantics() {
        assert!(glob_match(
            "linux-image-6.1.0-*-cloud-amd64-unsigned",
            "linux-image-6.1.0-50-cloud-amd64-unsigned"
        ));
        assert!(!glob_match(
            "linux-image-6.1.0-*-cloud-amd64-unsigned",
            "linux-image-6.1.0-50-cloud-amd64-unsigned-dbg"
        ));
        assert!(glob_match(
            "linux-binary-unsigned-7.3.*+deb13-cloud-amd64",
            "linux-binary-unsigned-7.3.4+deb13-cloud-amd64"
        ));
        assert!(!glob_match(
            "linux-binary-unsigned-7.3.*+deb13-cloud-amd64",
            "linux-binary-unsigned-7.2.12+deb13-cloud-amd64"
        ));
        assert!(glob_match(
            "usr/lib/modules/*/vmlinuz.unsigned",
            "usr/lib/modules/7.3.4+deb13-cloud-amd64/vmlinuz.unsigned"
        ));
        assert!(!glob_match("boot/vmlinuz-*", "boot/x/vmlinuz-1"));
        assert!(!glob_match("boot/*", "boot/a/b"));
        assert!(glob_match("boot/vmlinuz-?.?", "boot/vmlinuz-6.1"));
        assert!(glob_match("*", "abc"));
        assert!(!glob_match("a*", "b"));
        assert!(glob_match("a**b", "axxb"));
        assert!(!glob_match("abc", "ab"));
    }
}
