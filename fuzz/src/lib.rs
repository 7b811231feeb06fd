//! What the fuzz targets share: splitting one fuzz input into the several untrusted fields a
//! parser sees, so that seed files stay readable text.

/// Up to `N` fields from `data`, one per line (`\n`, which no header value or URL can hold).
/// The first byte is a presence mask (bit i set: field i is there), so every mix of absent and
/// empty fields is reachable; fields past the last line are absent.
pub fn fields<const N: usize>(data: &[u8]) -> Option<[Option<&str>; N]> {
    let (&mask, rest) = data.split_first()?;
    let text = std::str::from_utf8(rest).ok()?;
    let mut lines = text.split('\n');
    let mut out = [None; N];
    for (i, slot) in out.iter_mut().enumerate() {
        let line = lines.next();
        if mask & (1 << i) != 0 {
            *slot = line;
        }
    }
    Some(out)
}

/// The first line and the rest: a short parameter (a field name, a method) and the input.
pub fn head_and_rest(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (data.get(..at).unwrap_or_default(), data.get(at + 1..).unwrap_or_default()),
        None => (data, &[]),
    }
}
