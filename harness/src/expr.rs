//! Number expressions used for lengths, counts, flags and address offsets in case files.
//!
//! Cases say `IOV_MAX+1`, `2^32+1`, `-1` or `3*page+100` instead of hex, so the intent stays
//! readable. Arithmetic wraps in `u64`, which is exactly how the kernel sees a `size_t` or an
//! `unsigned long`: `-1` is `0xffff_ffff_ffff_ffff`.
//!
//! Grammar: `expr := ['-'] term (('+'|'-') term)*`, `term := factor ('*' factor)*`,
//! `factor := number | number '^' number | name`.

/// Page size on every kernel pvmtest targets (x86-64).
pub const PAGE: u64 = 4096;
/// `UIO_MAXIOV` (include/uapi/linux/uio.h), exposed to userspace as `IOV_MAX`.
pub const IOV_MAX: u64 = 1024;
/// `MAX_RW_COUNT` (include/linux/fs.h): `INT_MAX & PAGE_MASK`.
pub const MAX_RW_COUNT: u64 = 0x7fff_f000;

const NAMES: &[(&str, u64)] = &[
    ("page", PAGE),
    ("IOV_MAX", IOV_MAX),
    ("MAX_RW_COUNT", MAX_RW_COUNT),
    ("u32max", u32::MAX as u64),
    ("i32max", i32::MAX as u64),
    ("i64max", i64::MAX as u64),
    ("u64max", u64::MAX),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

/// Evaluates an expression; the error says what was not understood.
pub fn eval(src: &str) -> Result<u64, String> {
    let s: String = src.chars().filter(|c| !c.is_whitespace()).collect();
    if s.is_empty() {
        return Err("empty expression".into());
    }
    let mut total: u64 = 0;
    let mut sign_neg = false;
    let mut rest = s.as_str();
    if let Some(r) = rest.strip_prefix('-') {
        sign_neg = true;
        rest = r;
    }
    loop {
        let end = rest.find(['+', '-']).unwrap_or(rest.len());
        let term = eval_term(&rest[..end]).map_err(|e| format!("{e} in `{src}`"))?;
        total = if sign_neg {
            total.wrapping_sub(term)
        } else {
            total.wrapping_add(term)
        };
        if end == rest.len() {
            return Ok(total);
        }
        sign_neg = rest.as_bytes()[end] == b'-';
        rest = &rest[end + 1..];
    }
}

fn eval_term(term: &str) -> Result<u64, String> {
    let mut acc: u64 = 1;
    for factor in term.split('*') {
        acc = acc.wrapping_mul(eval_factor(factor)?);
    }
    Ok(acc)
}

fn eval_factor(f: &str) -> Result<u64, String> {
    if let Some((b, e)) = f.split_once('^') {
        let b = eval_factor(b)?;
        let e = eval_factor(e)?;
        let e = u32::try_from(e).map_err(|_| format!("exponent `{e}` too large"))?;
        return Ok(b.wrapping_pow(e));
    }
    if let Some((_, v)) = NAMES.iter().find(|(n, _)| *n == f) {
        return Ok(*v);
    }
    let parsed = if let Some(h) = f.strip_prefix("0x") {
        u64::from_str_radix(&h.replace('_', ""), 16)
    } else {
        f.replace('_', "").parse::<u64>()
    };
    parsed.map_err(|_| {
        let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
        format!("`{f}` is not a number or one of {}", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::eval;

    #[test]
    fn evaluates() {
        assert_eq!(eval("4096"), Ok(4096));
        assert_eq!(eval("0x1000"), Ok(4096));
        assert_eq!(eval("-1"), Ok(u64::MAX));
        assert_eq!(eval("2^32+1"), Ok((1u64 << 32) + 1));
        assert_eq!(eval("IOV_MAX+1"), Ok(1025));
        assert_eq!(eval("3*page - 100"), Ok(3 * 4096 - 100));
        assert_eq!(eval("2^63"), Ok(1u64 << 63));
        assert_eq!(eval("1_000"), Ok(1000));
        assert!(eval("pages").is_err());
        assert!(eval("").is_err());
        assert!(eval("2^99999999999").is_err());
    }
}
