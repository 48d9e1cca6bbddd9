//! The label of a request's kind of endpoint ([`RouteKind`]), for metrics and
//! the access log.
//!
//! Owns only the label and its fixed text; [`crate::route`] maps a parsed
//! route to it. Kept apart from the parser so that metrics and the access log,
//! which sit below the error renderer and the route parser, need neither.
//! Calls nothing in the crate.

/// A short, fixed label for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    Base,
    Catalog,
    Manifest,
    Blob,
    UploadStart,
    Upload,
    TagsList,
    Referrers,
    TagReference,
    DeletedTags,
    RestoreTag,
    DeleteTags,
    Other,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Base => "base",
            RouteKind::Catalog => "catalog",
            RouteKind::Manifest => "manifest",
            RouteKind::Blob => "blob",
            RouteKind::UploadStart => "upload_start",
            RouteKind::Upload => "upload",
            RouteKind::TagsList => "tags_list",
            RouteKind::Referrers => "referrers",
            RouteKind::TagReference => "tag_reference",
            RouteKind::DeletedTags => "deleted_tags",
            RouteKind::RestoreTag => "restore_tag",
            RouteKind::DeleteTags => "delete_tags",
            RouteKind::Other => "other",
        }
    }
}
