//! A contact code pasted by a user or carried in mDNS: parsing never panics, and a code
//! that parses is a verified card whose code parses back to the same card.
#![no_main]

use bonghwa_core::identity::ContactCard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(card) = ContactCard::from_code(text) {
        assert!(card.verify().is_ok());
        assert!(ContactCard::from_code(&card.to_code()).is_ok());
    }
});
