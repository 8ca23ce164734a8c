//! The part of `Authentication-Results` (RFC 8601) that the classifier trusts: which domains a
//! trusted verifier found a passing DKIM signature for.

/// Removes RFC 5322 comments (nested parentheses, backslash escapes) and unfolds.
fn strip_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let (mut depth, mut escaped, mut quoted) = (0usize, false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            '\r' | '\n' => out.push(' '),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// One Authentication-Results field: its authserv-id and the domains with `dkim=pass`
/// (from `header.d`, or the domain of `header.i`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResults {
    pub authserv_id: String,
    pub dkim_pass_domains: Vec<String>,
}

/// Parses one field value; None when it has no authserv-id.
pub fn parse(value: &str) -> Option<AuthResults> {
    let clean = strip_comments(value);
    let mut parts = clean.split(';');
    let authserv_id = parts.next()?.split_whitespace().next()?.trim_matches('"').to_ascii_lowercase();
    if authserv_id.is_empty() {
        return None;
    }
    let mut domains = Vec::new();
    for resinfo in parts {
        let mut tokens = resinfo.split_whitespace();
        let Some((method, result)) = tokens.next().and_then(|t| t.split_once('=')) else { continue };
        let method = method.split('/').next().unwrap_or(method);
        if !method.eq_ignore_ascii_case("dkim") || !result.trim_matches('"').eq_ignore_ascii_case("pass") {
            continue;
        }
        for prop in tokens {
            let Some((key, val)) = prop.split_once('=') else { continue };
            let val = val.trim_matches('"').to_ascii_lowercase();
            let domain = if key.eq_ignore_ascii_case("header.d") {
                Some(val)
            } else if key.eq_ignore_ascii_case("header.i") {
                val.rsplit_once('@').map(|(_, d)| d.to_string())
            } else {
                None
            };
            if let Some(d) = domain.filter(|d| !d.is_empty())
                && !domains.contains(&d)
            {
                domains.push(d);
            }
        }
    }
    Some(AuthResults { authserv_id, dkim_pass_domains: domains })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dkim_pass_domains_are_collected() {
        let r = parse("mx.tails.net; dkim=pass (2048-bit key) header.d=tails.net header.i=@tails.net header.b=abc;\n spf=pass smtp.mailfrom=x@tails.net").unwrap();
        assert_eq!(r.authserv_id, "mx.tails.net");
        assert_eq!(r.dkim_pass_domains, vec!["tails.net"]);
    }

    #[test]
    fn failed_or_other_methods_do_not_count() {
        let r = parse("mx.tails.net 1; dkim=fail header.d=tails.net; arc=pass header.d=tails.net; dkim=neutral header.i=@tails.net").unwrap();
        assert!(r.dkim_pass_domains.is_empty());
        assert_eq!(parse("mx.example; none").unwrap().dkim_pass_domains, Vec::<String>::new());
    }

    #[test]
    fn comments_cannot_smuggle_a_result() {
        let r =
            parse("mx.tails.net; dkim=fail (dkim=pass header.d=tails.net) header.d=evil.example").unwrap();
        assert!(r.dkim_pass_domains.is_empty());
        let r = parse("(comment; dkim=pass) mx.tails.net; dkim=pass header.i=alice@Tails.NET").unwrap();
        assert_eq!(r.authserv_id, "mx.tails.net");
        assert_eq!(r.dkim_pass_domains, vec!["tails.net"]);
    }

    #[test]
    fn garbage_does_not_panic() {
        assert_eq!(parse(""), None);
        assert_eq!(parse(";;;"), None);
        assert!(parse("x; dkim=pass header.d=").unwrap().dkim_pass_domains.is_empty());
        assert!(parse("x; =; ((((; \\").is_some());
    }
}
