//! What the MIME tree of a message's kept prefix shows: encryption at any depth, and the parts of
//! delivery and feedback reports.

use mail_parser::{Message, MimeHeaders, PartType};

const PGP_INLINE: &str = "-----BEGIN PGP MESSAGE-----";

/// What the MIME tree of the kept prefix shows, from every part's type (mail-parser lists the
/// parts of nested multiparts flat; an attached message's own parts are its own).
#[derive(Debug, Default)]
pub(super) struct Structure {
    pub encrypted: bool,
    pub delivery_report: bool,
    pub feedback_report: bool,
}

pub(super) fn structure(msg: &Message<'_>) -> Structure {
    let mut st = Structure::default();
    for part in &msg.parts {
        if let PartType::Text(t) = &part.body
            && t.contains(PGP_INLINE)
        {
            st.encrypted = true;
        }
        let Some(ct) = part.content_type() else { continue };
        let main = ct.ctype().to_ascii_lowercase();
        let sub = ct.subtype().unwrap_or_default().to_ascii_lowercase();
        match (main.as_str(), sub.as_str()) {
            ("multipart", "encrypted") => st.encrypted = true,
            // RFC 8551: enveloped (and authenticated-enveloped) data is encrypted; signed-data
            // and certs-only are not.
            ("application", "pkcs7-mime" | "x-pkcs7-mime")
                if ct.attribute("smime-type").is_some_and(|t| {
                    t.eq_ignore_ascii_case("enveloped-data") || t.eq_ignore_ascii_case("authenveloped-data")
                }) =>
            {
                st.encrypted = true
            }
            // RFC 3464 and 6533 delivery status, RFC 6522 returned headers: the parts of a DSN,
            // also when a gateway sends them without multipart/report (corpus: flufl-bounce).
            ("message", "delivery-status" | "global-delivery-status") | ("text", "rfc822-headers") => {
                st.delivery_report = true
            }
            // RFC 5965 (ARF) feedback report.
            ("message", "feedback-report") => st.feedback_report = true,
            _ => {}
        }
    }
    st
}
