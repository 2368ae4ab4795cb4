//! Stanza parsing: arbitrary bytes as one stanza; whatever parses must
//! survive serialise → parse unchanged, and typed parsing must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_actors::ns;
use shoal_actors::stanza::Stanza;
use shoal_actors::xml::{parse_element, NsBindings, ParseLimits};

fuzz_target!(|data: &[u8]| {
    let limits = ParseLimits::default();
    let Ok(el) = parse_element(data, &NsBindings::client(), &limits) else {
        return;
    };
    let xml = el.to_xml_in(ns::CLIENT);
    let again = parse_element(xml.as_bytes(), &NsBindings::client(), &limits).expect("own output parses");
    assert_eq!(again, el);
    if let Ok(stanza) = Stanza::from_element(el) {
        let _ = stanza.to_bytes();
        let _ = stanza.error_reply(&shoal_actors::error::StanzaError::new(
            shoal_actors::error::StanzaCondition::BadRequest,
        ));
    }
});
