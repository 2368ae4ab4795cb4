//! JID parsing: no panics, and a parsed JID parses to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_actors::jid::Jid;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(jid) = Jid::parse(s) {
        let again = Jid::parse(jid.as_str()).expect("a normalised JID parses");
        assert_eq!(again, jid);
        let _ = (jid.node(), jid.domain(), jid.resource(), jid.to_bare());
    }
});
