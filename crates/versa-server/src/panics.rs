//! Turning a caught panic into words for a log line and an error message.

/// The panic's message, if it carried one.
pub(crate) fn describe(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_of_both_kinds_are_read() {
        let caught = std::panic::catch_unwind(|| panic!("at {}", 3)).expect_err("panics");
        assert_eq!(super::describe(caught.as_ref()), "at 3");
        let caught = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).expect_err("panics");
        assert_eq!(super::describe(caught.as_ref()), "panic without a message");
    }
}
