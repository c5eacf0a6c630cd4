//! Materialising commit trees into directories. Not yet implemented: see the
//! checkout issue.
