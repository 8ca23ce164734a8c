//! Arbitrary signals, class, state view and policy settings through `policy::decide`.
#![no_main]

#[path = "../../tests/support/invariants.rs"]
mod invariants;

use arbitrary::Arbitrary;
use helpdesk_milter::address::normalize;
use helpdesk_milter::classify::{Class, Signals};
use helpdesk_milter::policy::{PolicyConfig, StateView};
use libfuzzer_sys::fuzz_target;

/// Addresses from a small pool most of the time, so that "own address" and loop matches happen.
#[derive(Arbitrary, Debug)]
enum Addr {
    Pool(u8),
    Any(String),
}

const POOL: [&str; 6] =
    ["support@tails.net", "Support@Tails.NET", "root@mail.tails.net", "alice@example.org", "", "yes"];

impl Addr {
    fn get(&self) -> String {
        match self {
            Addr::Pool(i) => POOL[usize::from(*i) % POOL.len()].to_string(),
            Addr::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    enabled: bool,
    loop_token: Addr,
    own: Vec<Addr>,
    system: Vec<Addr>,
    require_addressed: bool,
    max_per_hour: u32,
    max_per_domain_per_hour: u32,
    sender: Addr,
    from: Option<Addr>,
    flags: u16,
    x_loop: Vec<Addr>,
    class: u8,
    answered_recently: bool,
    replies_last_hour: u32,
    domain_replies_last_hour: u32,
    unavailable: bool,
}

fuzz_target!(|i: Input| {
    // As the configuration builds it: lowercased addresses, caps of at least 1.
    let cfg = PolicyConfig {
        enabled: i.enabled,
        loop_token: normalize(&i.loop_token.get()),
        own_addresses: i.own.iter().map(|a| normalize(&a.get())).collect(),
        system_addresses: i.system.iter().map(|a| normalize(&a.get())).collect(),
        require_addressed: i.require_addressed,
        max_per_hour: i.max_per_hour.max(1),
        max_per_domain_per_hour: i.max_per_domain_per_hour.max(1),
        new_topic_replies: i.flags & (1 << 11) != 0,
    };
    // As Signals::extract builds them: normalised addresses, null sender iff empty.
    let sender = normalize(&i.sender.get());
    let bit = |n: u32| i.flags & (1 << n) != 0;
    let s = Signals {
        null_sender: sender.is_empty(),
        sender,
        from: i.from.as_ref().map(|a| normalize(&a.get())).filter(|a| !a.is_empty()),
        report: bit(0),
        auto_submitted: bit(1),
        precedence_bulk: bit(2),
        list_headers: bit(3),
        autoresponder_headers: bit(4),
        role_sender: bit(5),
        spam: bit(6),
        in_thread: bit(7),
        encrypted: bit(8),
        auto_response_suppress: bit(9),
        addressed: bit(10),
        x_loop: i.x_loop.iter().map(Addr::get).collect(),
        ..Signals::default()
    };
    let class = Class::ALL[usize::from(i.class) % Class::ALL.len()];
    let view = StateView {
        answered_recently: i.answered_recently,
        replies_last_hour: i.replies_last_hour,
        domain_replies_last_hour: i.domain_replies_last_hour,
        unavailable: i.unavailable,
        new_topic: bit(12),
    };
    invariants::check_policy(&cfg, &s, class, &view);
});
