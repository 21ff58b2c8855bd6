//! Output formats, each reading only the report model.

pub mod html;
pub mod live;
pub mod prometheus;
pub mod terminal;
