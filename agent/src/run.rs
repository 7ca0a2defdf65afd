//! The agent process: servers, repair controller, install loop, cleanup.
