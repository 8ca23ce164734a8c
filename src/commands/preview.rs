//! `preview`: the reply that a message would get.

use super::classify::default_envelope;
use crate::config::Config;
use crate::message::MessageData;
use crate::reply::{self, ReplyRequest};
use crate::reply_file::ReplyFile;
use crate::triage;

/// `preview`: the complete reply message that would answer `message` (or a sample request),
/// in `language` if given, else in the language the daemon would pick.
pub fn preview(
    config: &Config,
    file: &ReplyFile,
    language: Option<&str>,
    message: Option<&MessageData>,
) -> Vec<u8> {
    let mut request = match message {
        Some(data) => {
            let envelope = default_envelope(config, data, None, &[]);
            let kept = data.to_rfc5322();
            let parsed = crate::classify::parse(&kept);
            let text = parsed.as_ref().and_then(|p| p.body_text(0));
            triage::reply_request(&envelope, parsed.as_ref(), text.as_deref(), &[])
        }
        None => ReplyRequest { recipient: "someone@example.org".into(), ..ReplyRequest::default() },
    };
    if request.recipient.is_empty() {
        // A message without sender would get no reply; show the text all the same.
        request.recipient = "someone@example.org".into();
    }
    if let Some(lang) = language {
        // The language asked for, and no other.
        request.languages = vec![lang.to_string()];
        request.text_sample.clear();
    }
    reply::build(&config.autoreply, file, &request, crate::clock::unix_now()).message
}
