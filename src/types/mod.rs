//! The data that crosses stage boundaries, so that every stage can name it without importing an
//! earlier stage: a record and its origin (`record`), its partition key (`key`), and a file's
//! identity and content fingerprints (`identity`).

pub mod identity;
pub mod key;
pub mod record;
