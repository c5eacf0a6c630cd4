//! Fetching objects from other repositories (local and HTTP). Not yet
//! implemented: see the pull engine issue.
