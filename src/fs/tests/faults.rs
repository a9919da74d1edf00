//! Injected failures at the file-system level.
