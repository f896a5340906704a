//! A setting's value as the experiment file gives it, typed by its key's kind, and the shortest
//! text of a float (how every number is shown to users: `2e-5`, `0.1`, `16`).
//!
//! It depends on nothing in bertlab: the schema describes keys with these values, the parser
//! makes them, and the plan, the data stage and the reports print them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A scalar setting, typed by its key's [`ValueKind`](crate::experiment::schema::ValueKind).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Setting {
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
}

impl Setting {
    pub fn as_bool(&self) -> bool {
        match self {
            Setting::Bool(value) => *value,
            other => panic!("expected a boolean setting, found {other:?}"),
        }
    }

    pub fn as_integer(&self) -> i64 {
        match self {
            Setting::Integer(value) => *value,
            other => panic!("expected an integer setting, found {other:?}"),
        }
    }

    pub fn as_float(&self) -> f64 {
        match self {
            Setting::Float(value) => *value,
            Setting::Integer(value) => *value as f64,
            other => panic!("expected a float setting, found {other:?}"),
        }
    }

    pub fn as_text(&self) -> &str {
        match self {
            Setting::Text(value) => value,
            other => panic!("expected a string setting, found {other:?}"),
        }
    }
}

impl fmt::Display for Setting {
    /// Numbers in their shortest form (`2e-5`, `0.1`, `16`), strings as they are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Bool(value) => write!(f, "{value}"),
            Setting::Integer(value) => write!(f, "{value}"),
            Setting::Float(value) => f.write_str(&format_float(*value)),
            Setting::Text(value) => f.write_str(value),
        }
    }
}

/// The shortest form of a float that reads back to the same value: `2e-5`, `0.1`, `3`.
pub fn format_float(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-3..1e7).contains(&magnitude) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}
