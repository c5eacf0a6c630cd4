//! Pure OSTree format code: object types, checksums, GVariant object models
//! and name validation. Nothing here does I/O; parsers take bytes and return
//! values or [`FormatError`]s, never panicking on untrusted input.

pub mod checksum;
pub mod commit;
pub mod content;
pub mod delta;
pub mod dirmeta;
pub mod dirtree;
pub mod error;
pub mod glib_order;
mod gv;
pub mod metadata;
pub mod mode;
pub mod names;
pub mod normal_form;
pub mod number;
pub mod object;
pub mod summary;
pub mod variant_text;
pub mod xattrs;

pub use checksum::Checksum;
pub use commit::Commit;
pub use content::{ArchiveHeader, FileHeader};
pub use dirmeta::DirMeta;
pub use dirtree::{DirTree, TreeDir, TreeFile};
pub use error::FormatError;
pub use gv::MAX_METADATA_SIZE;
pub use metadata::{Metadata, Value};
pub use object::{ObjectName, ObjectType};
pub use summary::{Summary, SummaryRef};
pub use xattrs::{Xattr, Xattrs};
