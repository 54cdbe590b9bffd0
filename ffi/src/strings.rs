//! C strings across the boundary: borrowing the caller's, handing out ours.
//!
//! Every string the library returns is a heap block the caller owns until it passes it to
//! `bh_string_free`. The library remembers each outstanding block (its address and length)
//! in [`OUTSTANDING`], so `bh_string_free` can refuse a pointer it never handed out, or one
//! already freed, instead of corrupting the heap. The length is remembered too, so the
//! block is freed with exactly the layout it was allocated with even if the caller wrote a
//! NUL into it.
//!
//! Addresses are stored bit-inverted: leak checkers (valgrind, LeakSanitizer) find leaks by
//! scanning memory for pointers, and a plain copy of the address here would make a string
//! the caller forgot to free look "still reachable" instead of "definitely lost".

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char};
use std::sync::{Mutex, PoisonError};

use crate::error::FfiError;

/// Blocks handed to the caller and not yet freed: inverted address → length with the NUL.
static OUTSTANDING: Mutex<Option<HashMap<usize, usize>>> = Mutex::new(None);

/// The registry key of a block: its address, bit-inverted (see the module docs).
fn key(ptr: *const c_char) -> usize {
    !ptr.addr()
}

/// Borrows a NUL-terminated UTF-8 string argument.
///
/// # Safety
///
/// `ptr` is NULL or points to a NUL-terminated string that stays valid and unchanged for
/// `'a` (the C caller's promise for the duration of the call).
pub(crate) unsafe fn borrow_str<'a>(
    ptr: *const c_char,
    what: &'static str,
) -> Result<&'a str, FfiError> {
    // SAFETY: forwarded verbatim from this function's contract.
    let bytes = unsafe { borrow_bytes(ptr, what) }?;
    std::str::from_utf8(bytes).map_err(|e| FfiError::NotUtf8 {
        what,
        offset: e.valid_up_to(),
    })
}

/// Borrows a NUL-terminated string argument as bytes (without the NUL).
///
/// # Safety
///
/// As for [`borrow_str`].
pub(crate) unsafe fn borrow_bytes<'a>(
    ptr: *const c_char,
    what: &'static str,
) -> Result<&'a [u8], FfiError> {
    if ptr.is_null() {
        return Err(FfiError::Null(what));
    }
    // SAFETY: `ptr` is not NULL, and the caller promises it points to a NUL-terminated
    // string that outlives `'a`.
    Ok(unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// Moves `text` to a new heap block the caller owns, and remembers the block.
pub(crate) fn hand_out(text: String) -> Result<*mut c_char, FfiError> {
    let bytes = CString::new(text)
        .map_err(|_| FfiError::InteriorNul)?
        .into_bytes_with_nul()
        .into_boxed_slice();
    let len = bytes.len();
    let ptr = Box::into_raw(bytes).cast::<c_char>();
    OUTSTANDING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .insert(key(ptr), len);
    Ok(ptr)
}

/// Frees a block from [`hand_out`]. NULL is ignored; a pointer that is not an outstanding
/// block is refused with [`FfiError::UnknownString`] and left alone.
pub(crate) fn take_back(ptr: *mut c_char) -> Result<(), FfiError> {
    if ptr.is_null() {
        return Ok(());
    }
    let len = OUTSTANDING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
        .and_then(|blocks| blocks.remove(&key(ptr)))
        .ok_or(FfiError::UnknownString)?;
    let block = std::ptr::slice_from_raw_parts_mut(ptr.cast::<u8>(), len);
    // SAFETY: `ptr` was produced by `Box::into_raw` on a `Box<[u8]>` of exactly `len`
    // bytes in `hand_out` (the registry holds exactly such blocks), and removing it from
    // the registry under the lock guarantees this is the only reconstruction of that box.
    drop(unsafe { Box::from_raw(block) });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handed_out_string_is_freed_once_and_then_refused() {
        let ptr = hand_out("hello".to_owned()).unwrap();
        // SAFETY: `ptr` is a live NUL-terminated block from `hand_out`.
        assert_eq!(unsafe { borrow_str(ptr, "s") }.unwrap(), "hello");
        take_back(ptr).unwrap();
        assert!(matches!(take_back(ptr), Err(FfiError::UnknownString)));
    }

    #[test]
    fn a_foreign_pointer_is_refused_and_not_freed() {
        let mine = CString::new("not from hand_out").unwrap();
        let ptr = mine.as_ptr().cast_mut();
        assert!(matches!(take_back(ptr), Err(FfiError::UnknownString)));
        assert_eq!(mine.to_str().unwrap(), "not from hand_out");
    }

    #[test]
    fn null_and_bad_utf8_arguments_are_errors() {
        // SAFETY: NULL is allowed by the contract.
        let null = unsafe { borrow_str(std::ptr::null(), "request_json") };
        assert_eq!(null.unwrap_err().to_string(), "request_json is NULL");
        let bad = c"ab\xff";
        // SAFETY: `bad` is a NUL-terminated literal.
        let err = unsafe { borrow_str(bad.as_ptr(), "data_dir") }.unwrap_err();
        assert_eq!(
            err.to_string(),
            "data_dir is not valid UTF-8 (first bad byte at offset 2)"
        );
    }

    #[test]
    fn a_nul_inside_the_text_is_an_error() {
        assert!(matches!(
            hand_out("a\0b".to_owned()),
            Err(FfiError::InteriorNul)
        ));
    }
}
