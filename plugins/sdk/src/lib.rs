//! The plugin SDK: the `Plugin` trait and what plugins share with the gateway (request
//! context, JSON API types, layered settings, duration/size syntax, path globs, the
//! client address rule, percent-decoding).
#![forbid(unsafe_code)]

pub mod api;
pub mod duration;
pub mod glob;
pub mod html;
pub mod net;
pub mod openapi;
pub mod path;
pub mod percent;
pub mod plugin;
pub mod request;
pub mod settings;
pub mod stats;
pub mod tasks;

pub use api::{ApiError, ApiRequest, ApiResponse, ApiResult};
pub use glob::{GlobSet, RouteGlobs};
pub use plugin::{Manifest, Plugin, PluginError, PluginSpec, Readiness};
pub use request::{HeaderList, Identity, RateLimitSpec, RequestInfo, RouteKind};
pub use settings::{Problem, Problems, Settings};
pub use tasks::Tasks;
