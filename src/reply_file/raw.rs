//! The reply file as written, before validation (serde). Everything a person may forget is an
//! Option, so that the validator can report it with the rest instead of serde stopping at the
//! first.

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplyFile {
    pub default_language: Option<Spanned<String>>,
    pub hot_topics: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub topics: BTreeMap<Spanned<String>, Spanned<RawTopic>>,
    #[serde(default)]
    pub languages: BTreeMap<Spanned<String>, Spanned<RawLanguage>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a topic section such as [topics.wifi-realtek], with title, link and keywords"
)]
pub(super) struct RawTopic {
    pub title: Option<Spanned<String>>,
    pub link: Option<Spanned<String>>,
    pub text: Option<Spanned<String>>,
    #[serde(default)]
    pub keywords: Vec<Spanned<String>>,
    #[serde(default)]
    pub translations: BTreeMap<Spanned<String>, Spanned<RawTopicTranslation>>,
}

/// A topic in another language: its title alone (`de = "..."`, the older and shorter form), or a
/// section `[topics.ID.translations.de]` with any of title, text and keywords.
#[derive(Debug)]
pub(super) enum RawTopicTranslation {
    Title(String),
    Section(RawTopicSection),
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a translation section such as [topics.wifi-realtek.translations.de], with title, text or keywords"
)]
pub(super) struct RawTopicSection {
    pub title: Option<Spanned<String>>,
    pub text: Option<Spanned<String>>,
    #[serde(default)]
    pub keywords: Vec<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawTopicTranslation {
    /// A string or a table. Not `#[serde(untagged)]`: that buffers the value and loses the
    /// positions that the errors need; a visitor hands the table to toml's own deserializer.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = RawTopicTranslation;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a translated title such as de = \"...\", or a section such as [topics.wifi-realtek.translations.de] with title, text or keywords",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawTopicTranslation::Title(v.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawTopicSection::deserialize(MapAccessDeserializer::new(map))
                    .map(RawTopicTranslation::Section)
            }
        }
        d.deserialize_any(Either)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a language section such as [languages.de], with subject and body")]
pub(super) struct RawLanguage {
    pub subject: Option<Spanned<String>>,
    pub body: Option<Spanned<String>>,
}

/// toml's message, with a hint where it speaks to programmers.
pub(super) fn plain_toml_message(message: &str) -> String {
    let m = message.trim_end();
    if m.starts_with("unknown field") {
        format!("{m}; check the spelling, or remove this line")
    } else if m.starts_with("duplicate key") {
        format!("{m}; each name may appear only once, remove one of them")
    } else {
        m.to_string()
    }
}
