//! A contact code pasted by a user or carried in mDNS: parsing never panics, and a code
//! that parses is a verified card (and prekey) whose code parses back to the same.
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
    // With the signed prekey that may follow the card: both verified, and they round-trip.
    if let Ok((card, prekey)) = ContactCard::from_code_with_prekey(text) {
        let again = ContactCard::from_code_with_prekey(&card.to_code_with(prekey.as_ref()));
        assert_eq!(again.ok(), Some((card, prekey)));
    }
});
