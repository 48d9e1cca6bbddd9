//! The one SQL interface both engines answer: statements written once with
//! `?1`-style placeholders, parameters and columns as a small [`Value`], rows
//! read by index with a typed [`Row::get`]. The table files of this module
//! write their queries against [`Db`]; the engines (`sqlite` here, `pg` in
//! its file) translate what differs (PostgreSQL's `$1` placeholders, its
//! types) and run every call inside one transaction.

use super::StateError;

/// A parameter or a column.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// The parameters of a statement: `vals![a, &b, c]`.
macro_rules! vals {
    ($($v:expr),* $(,)?) => {
        &[$($crate::state::sql::Value::from($v)),*] as &[$crate::state::sql::Value]
    };
}
pub(super) use vals;

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(v.into())
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&Vec<u8>> for Value {
    fn from(v: &Vec<u8>) -> Self {
        Value::Blob(v.clone())
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::Null, Value::Int)
    }
}
impl From<Option<bool>> for Value {
    fn from(v: Option<bool>) -> Self {
        v.map_or(Value::Null, Value::from)
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Value::Null, Value::from)
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        v.map_or(Value::Null, Value::Text)
    }
}
impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Self {
        v.as_ref().map_or(Value::Null, Value::from)
    }
}
impl From<&Option<Vec<u8>>> for Value {
    fn from(v: &Option<Vec<u8>>) -> Self {
        v.as_ref().map_or(Value::Null, Value::from)
    }
}

/// A closed set of states stored as the text of a column: the enum, its
/// text (the same in SQLite and PostgreSQL, and its serde name, so the JSON
/// the admin API prints is that text too), `parse` and `from_column` (an
/// unknown text is a [`StateError::UnknownText`] naming the table and column),
/// and its [`Value`].
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident in $table:literal . $column:literal {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the column (and printed in JSON).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The variant stored as `text`, if any.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The variant of a column's text; an unknown text is an error
            /// naming the table, the column and the text.
            pub(super) fn from_column(text: String) -> Result<Self, $crate::state::StateError> {
                Self::parse(&text).ok_or($crate::state::StateError::UnknownText {
                    table: $table,
                    column: $column,
                    found: text,
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<$name> for $crate::state::sql::Value {
            fn from(v: $name) -> Self {
                $crate::state::sql::Value::Text(v.as_str().to_owned())
            }
        }
    };
}
pub(super) use text_enum;

/// A column read back into a Rust type; `None`: the column holds another type.
pub(super) trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}
impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug)]
pub(super) struct Row(pub(super) Vec<Value>);

impl Row {
    pub(super) fn get<T: FromValue>(&self, i: usize) -> Result<T, StateError> {
        let v = self.0.get(i).unwrap_or(&Value::Null);
        T::from_value(v).ok_or_else(|| StateError::Decode {
            column: i,
            found: format!("{v:?}"),
            wanted: std::any::type_name::<T>(),
        })
    }
}

/// A transaction of either engine.
pub(super) trait Db {
    /// Runs one statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, StateError>;
    /// Runs one statement; every row it returned.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StateError>;
    /// The first row, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, StateError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// A SQLite transaction, with the database path for its errors.
pub(super) struct SqliteDb<'a> {
    pub(super) tx: &'a rusqlite::Transaction<'a>,
    pub(super) path: &'a std::path::Path,
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl SqliteDb<'_> {
    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }
}

impl Db for SqliteDb<'_> {
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, StateError> {
        let mut stmt = self.tx.prepare_cached(sql).map_err(|e| self.err(e))?;
        stmt.execute(rusqlite::params_from_iter(params))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StateError> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.tx.prepare_cached(sql).map_err(|e| self.err(e))?;
        let n = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(match r.get_ref(i).map_err(|e| self.err(e))? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(f) => Value::Int(f as i64),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(Row(row));
        }
        Ok(out)
    }
}
