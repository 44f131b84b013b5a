//! A served Arrow schema in Spark's JSON form (Delta's `schemaString`),
//! using only the type names the Delta Sharing connectors parse. Sluice
//! serves timestamps without a time zone as `timestamp`, not
//! `timestamp_ntz`, which the Python connector cannot read; the Parquet
//! files say the same (microseconds, not adjusted to UTC).

use arrow::datatypes::{DataType, Schema};
use serde_json::{Value, json};

/// The Spark type name of an Arrow type served by Sluice.
fn spark_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "byte".into(),
        DataType::Int16 | DataType::UInt8 => "short".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "long".into(),
        DataType::UInt64 => "decimal(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        // Text, and anything else Sluice serves as text.
        _ => "string".into(),
    }
}

/// `{"type":"struct","fields":[…]}` for `schema`.
pub fn schema_string(schema: &Schema) -> String {
    let fields: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| {
            json!({
                "name": f.name(),
                "type": spark_type(f.data_type()),
                "nullable": f.is_nullable(),
                "metadata": {},
            })
        })
        .collect();
    json!({ "type": "struct", "fields": fields }).to_string()
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{Field, TimeUnit};

    use super::*;

    #[test]
    fn served_types_map_to_spark_names() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "when",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new("day", DataType::Date32, true),
            Field::new("cost", DataType::Float64, true),
            Field::new("name", DataType::Utf8, true),
        ]);
        let parsed: Value = serde_json::from_str(&schema_string(&schema)).unwrap();
        let types: Vec<&str> = parsed["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["long", "timestamp", "date", "double", "string"]);
        assert_eq!(parsed["fields"][0]["nullable"], false);
        assert_eq!(parsed["type"], "struct");
    }
}
