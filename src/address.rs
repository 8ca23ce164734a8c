//! Mail addresses as the classifier compares them: normalised, split, matched against patterns.

/// Lowercases an address and strips angle brackets and surrounding space, so that
/// `<Support@Tails.NET>` and `support@tails.net` compare equal.
pub fn normalize(addr: &str) -> String {
    let a = addr.trim();
    let a = a.strip_prefix('<').unwrap_or(a);
    let a = a.strip_suffix('>').unwrap_or(a);
    a.trim().to_lowercase()
}

/// Splits `local@domain` at the last `@`; None unless both sides are non-empty.
pub fn split(addr: &str) -> Option<(&str, &str)> {
    let (local, domain) = addr.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then_some((local, domain))
}

/// Matches `text` against a pattern in which `*` stands for any run of characters.
/// Both are expected in the same case.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // No allocation: it runs for every role-sender pattern on every message.
    let Some((first, tail)) = pattern.split_once('*') else { return pattern == text };
    let (middle, last) = tail.rsplit_once('*').unwrap_or(("", tail));
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in middle.split('*').filter(|p| !p.is_empty()) {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// An address, or every address of a domain (`*@domain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderPattern {
    Address(String),
    Domain(String),
}

impl SenderPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let n = normalize(s);
        if let Some(domain) = n.strip_prefix("*@") {
            if domain.is_empty() || domain.contains(['@', '*']) {
                return Err(format!("{s:?} is not \"*@domain\""));
            }
            return Ok(SenderPattern::Domain(domain.to_string()));
        }
        if n.contains('*') || split(&n).is_none() {
            return Err(format!("{s:?} is neither an address nor \"*@domain\""));
        }
        Ok(SenderPattern::Address(n))
    }

    /// Whether the normalised address `addr` matches.
    pub fn matches(&self, addr: &str) -> bool {
        match self {
            SenderPattern::Address(a) => a == addr,
            SenderPattern::Domain(d) => split(addr).is_some_and(|(_, dom)| dom == d),
        }
    }
}

/// Whether a normalised address matches any of the patterns.
pub fn matches_any(patterns: &[SenderPattern], addr: &str) -> bool {
    patterns.iter().any(|p| p.matches(addr))
}

/// Local parts of automation and role addresses (RFC 5230 §4.6 and the prior art); `*` is any
/// run of characters. The default of `helpdesk.role_senders`.
pub const DEFAULT_ROLE_SENDERS: &[&str] = &[
    "mailer-daemon",
    "postmaster",
    "listserv",
    "majordomo",
    "owner-*",
    "*-owner",
    "*-request",
    "*-bounce",
    "*-bounces",
    "*-bounce+*",
    "*-bounces+*",
    "bounce-*",
    "bounces-*",
    "bounce",
    "bounces",
    "noreply*",
    "no-reply*",
    "no_reply*",
    "do-not-reply*",
    "do_not_reply*",
    "donotreply*",
];

/// Whether the local part of a normalised address matches one of the role patterns
/// (mailer-daemon, noreply*, *-request, ...).
pub fn is_role_sender(role_patterns: &[String], addr: &str) -> bool {
    let local = split(addr).map_or(addr, |(l, _)| l);
    role_patterns.iter().any(|p| glob_match(p, local))
}

/// Whether a normalised envelope sender is an Internet address a reply can be delivered to:
/// `local@domain` with a dot-atom or quoted local part and a domain name of two or more labels
/// (letters, digits, hyphens, or non-ASCII letters for SMTPUTF8), not all-numeric at the top.
/// A bare local part, an empty domain, a single-label domain (`root@localhost`) or an address
/// literal (`user@[192.0.2.1]`) is not: through the local relay, a reply to such an address would
/// go to a user of the mail host, or to a host that no domain names.
pub fn is_deliverable(addr: &str) -> bool {
    let Some((local, domain)) = addr.rsplit_once('@') else { return false };
    is_local_part(local) && is_domain_name(domain)
}

fn is_local_part(local: &str) -> bool {
    if local.is_empty() || local.len() > 64 {
        return false;
    }
    if let Some(quoted) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        // RFC 5321 quoted-string: printable characters, with `\` and `"` escaped.
        let mut escaped = false;
        return quoted.chars().all(|c| {
            let ok = escaped || (c != '"' && !c.is_control());
            escaped = !escaped && c == '\\';
            ok && (c == ' ' || !c.is_whitespace())
        }) && !escaped;
    }
    // Dot-atom: atext runs separated by single dots.
    local.split('.').all(|atom| {
        !atom.is_empty()
            && atom.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || "!#$%&'*+-/=?^_`{|}~".contains(c)
                    || (!c.is_ascii() && !c.is_control())
            })
    })
}

fn is_domain_name(domain: &str) -> bool {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let labels: Vec<&str> = domain.split('.').collect();
    domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric()))
        })
        && labels.last().is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()))
}

/// The key under which a sender is remembered (doc/reply-rules.md, `interval`): lowercase, BATV
/// tag removed, SRS decoded, so that the same person is recognised behind forwarders and
/// bounce-address tagging.
pub fn canonical_sender(sender: &str) -> String {
    let a = normalize(sender);
    let Some((local, domain)) = split(&a) else { return a };
    // BATV: prvs=TAG=local@domain (RFC draft), also seen as prvs=local/TAG.
    let local = match local.strip_prefix("prvs=").or_else(|| local.strip_prefix("msprvs1=")) {
        Some(rest) => match rest.split_once('=') {
            Some((_, orig)) if !orig.is_empty() => orig,
            _ => local,
        },
        None => local,
    };
    // SRS0=HASH=TT=orig-domain=orig-local@forwarder; SRS1=HASH=forwarder==HASH=TT=domain=local@...
    if let Some(rest) = local.strip_prefix("srs0=").or_else(|| local.strip_prefix("srs0+")).or_else(|| {
        local
            .strip_prefix("srs1=")
            .or_else(|| local.strip_prefix("srs1+"))
            .and_then(|r| r.split_once("==").map(|(_, x)| x))
    }) {
        let parts: Vec<&str> = rest.splitn(4, '=').collect();
        if let [_hash, _tt, orig_domain, orig_local] = parts[..]
            && !orig_domain.is_empty()
            && !orig_local.is_empty()
        {
            return format!("{orig_local}@{orig_domain}");
        }
    }
    format!("{local}@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_brackets_and_case() {
        assert_eq!(normalize(" <Support@Tails.NET> "), "support@tails.net");
        assert_eq!(normalize("<>"), "");
    }

    #[test]
    fn deliverable_addresses() {
        for a in [
            "alice@example.org",
            "a.b+tag@mail.example.co.uk",
            "\"john doe\"@example.org",
            "o'brien@example.ie",
            "prvs=1234=alice@example.org",
            "user@xn--bcher-kva.example",
            "jörg@bücher.example",
            "alice@example.org.",
        ] {
            assert!(is_deliverable(a), "{a}");
        }
        for a in [
            "",
            "alice",
            "root@localhost",
            "alice@",
            "@example.org",
            "alice@example",
            "alice@[192.0.2.1]",
            "alice@192.0.2.1",
            "alice@-example.org",
            "alice@example..org",
            "a..b@example.org",
            ".alice@example.org",
            "al ice@example.org",
            "alice@exa mple.org",
            "alice@exam_ple.org",
            "\"unterminated@example.org",
            "a@b@",
        ] {
            assert!(!is_deliverable(a), "{a}");
        }
    }

    #[test]
    fn glob() {
        assert!(glob_match("owner-*", "owner-list"));
        assert!(glob_match("*-request", "tails-dev-request"));
        assert!(glob_match("*-bounces+*", "list-bounces+bob=example.org"));
        assert!(!glob_match("*-request", "request"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("noreply*", "noreply"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn patterns() {
        let dom = SenderPattern::parse("*@Tails.net").unwrap();
        assert!(dom.matches("alice@tails.net"));
        assert!(!dom.matches("alice@tails.net.evil.example"));
        assert!(!dom.matches("alice@sub.tails.net"));
        let addr = SenderPattern::parse("<Devnull@tails.boum.org>").unwrap();
        assert!(addr.matches("devnull@tails.boum.org"));
        assert!(SenderPattern::parse("tails.net").is_err());
        assert!(SenderPattern::parse("a*@tails.net").is_err());
    }

    #[test]
    fn role_senders_are_recognised_in_any_case() {
        let roles: Vec<String> = DEFAULT_ROLE_SENDERS.iter().map(|s| s.to_string()).collect();
        for a in [
            "mailer-daemon@example.org",
            "postmaster@example.org",
            "owner-tails-dev@lists.example",
            "tails-dev-request@lists.example",
            "list-bounces+bob=example.org@lists.example",
            "bounce-123@esp.example",
            "noreply@github.example",
            "no-reply-notifications@example.org",
            "donotreply@bank.example",
        ] {
            assert!(is_role_sender(&roles, &normalize(&a.to_uppercase())), "{a}");
        }
        for a in ["alice@example.org", "requester@example.org", "nora@example.org", "bouncer@example.org"] {
            assert!(!is_role_sender(&roles, a), "{a}");
        }
    }

    #[test]
    fn canonical_senders() {
        assert_eq!(canonical_sender("<Alice@Example.ORG>"), "alice@example.org");
        assert_eq!(canonical_sender("prvs=1234abcd=alice@example.org"), "alice@example.org");
        assert_eq!(canonical_sender("SRS0=HHH=TT=example.org=alice@forwarder.example"), "alice@example.org");
        assert_eq!(
            canonical_sender("SRS1=XXX=fwd1.example==HHH=TT=example.org=alice@fwd2.example"),
            "alice@example.org"
        );
        // Malformed tags are kept as they are rather than guessed at.
        assert_eq!(canonical_sender("srs0=broken@forwarder.example"), "srs0=broken@forwarder.example");
        assert_eq!(canonical_sender("prvs=@example.org"), "prvs=@example.org");
        assert_eq!(canonical_sender(""), "");
    }
}
