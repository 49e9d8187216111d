//! Writing CSV (RFC 4180) for people who open it in a spreadsheet: a cell
//! a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`,
//! tab or carriage return) is neutralised with a leading `'`, in CSV and in
//! any other file a spreadsheet opens ([`neutralise`]). The query-service's
//! exports, the reports and the import rejections write through here.

use std::borrow::Cow;

/// Whether a spreadsheet would take `cell` for a formula.
pub fn is_formula(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// `cell`, prefixed with `'` when a spreadsheet would take it for a formula.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    if is_formula(cell) { Cow::Owned(format!("'{cell}")) } else { Cow::Borrowed(cell) }
}

/// One CSV line: fields with a separator, quote or line break quoted,
/// quotes doubled, formula-like cells neutralised; ends with CRLF.
pub fn line<'a>(out: &mut Vec<u8>, fields: impl Iterator<Item = &'a str>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let formula = is_formula(field);
        let quote = formula || field.contains([',', '"', '\n', '\r']);
        if quote {
            out.push(b'"');
        }
        if formula {
            out.push(b'\'');
        }
        for b in field.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        if quote {
            out.push(b'"');
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    fn line(fields: &[&str]) -> String {
        let mut out = Vec::new();
        super::line(&mut out, fields.iter().copied());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_what_needs_it_and_neutralises_formulas() {
        assert_eq!(line(&["ART-1", "Bolt, M8", "say \"hi\""]), "ART-1,\"Bolt, M8\",\"say \"\"hi\"\"\"\r\n");
        assert_eq!(line(&["=HYPERLINK(\"x\")", "+1", "-2", "@a", "ok"]), "\"'=HYPERLINK(\"\"x\"\")\",\"'+1\",\"'-2\",\"'@a\",ok\r\n");
        assert_eq!(line(&["", "3"]), ",3\r\n");
    }

    #[test]
    fn neutralise_prefixes_only_formula_like_cells() {
        assert_eq!(super::neutralise("=1+1"), "'=1+1");
        assert_eq!(super::neutralise("ART-1"), "ART-1");
    }
}
