//! Synthetic sample datasets, deterministic for a seed: two health
//! (hospital admissions, vaccination coverage) and two education (school
//! results, school enrolment), one per tier and then some. Tests and
//! benchmarks make them at any size; the committed `datasets/` is this
//! generator's output at 2,000 rows each.
//!
//! Files are written batch by batch (memory stays flat at any size) as
//! zstd Parquet with page statistics, the layout Sluice serves best.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BATCH_ROWS: u64 = 65_536;
const REGIONS: [&str; 6] = ["north", "south", "east", "west", "midlands", "london"];

/// Writes every sample dataset (or only `only`) under `out`, version 1.
/// Returns each dataset id with its row count.
pub fn write_all(
    out: &Path,
    rows: u64,
    seed: u64,
    only: Option<&str>,
) -> anyhow::Result<Vec<(String, u64)>> {
    let mut written = Vec::new();
    for spec in specs() {
        if only.is_some_and(|o| o != spec.id) {
            continue;
        }
        let dir = out.join(spec.id);
        let version_dir = dir.join("versions").join("1");
        std::fs::create_dir_all(&version_dir)?;
        write_parquet(&version_dir.join("part-0.parquet"), &spec, rows, seed)?;
        std::fs::write(dir.join("dataset.toml"), spec.manifest)?;
        written.push((spec.id.to_string(), rows));
    }
    anyhow::ensure!(
        !written.is_empty(),
        "no sample dataset is called {:?}",
        only.unwrap_or("")
    );
    Ok(written)
}

struct Spec {
    id: &'static str,
    manifest: &'static str,
    schema: fn() -> SchemaRef,
    batch: fn(&mut ChaCha8Rng, SchemaRef, u64, u64, u64) -> anyhow::Result<RecordBatch>,
}

fn specs() -> Vec<Spec> {
    vec![
        Spec {
            id: "hospital-admissions",
            manifest: include_str!("demo_data/hospital-admissions.toml"),
            schema: admissions_schema,
            batch: admissions_batch,
        },
        Spec {
            id: "vaccination-coverage",
            manifest: include_str!("demo_data/vaccination-coverage.toml"),
            schema: vaccination_schema,
            batch: vaccination_batch,
        },
        Spec {
            id: "school-results",
            manifest: include_str!("demo_data/school-results.toml"),
            schema: results_schema,
            batch: results_batch,
        },
        Spec {
            id: "school-enrolment",
            manifest: include_str!("demo_data/school-enrolment.toml"),
            schema: enrolment_schema,
            batch: enrolment_batch,
        },
    ]
}

fn write_parquet(path: &Path, spec: &Spec, rows: u64, seed: u64) -> anyhow::Result<()> {
    let schema = (spec.schema)();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(256 * 1024))
        .build();
    let tmp = path.with_extension("parquet.tmp");
    let mut writer = ArrowWriter::try_new(File::create(&tmp)?, schema.clone(), Some(props))?;
    // One stream per dataset, so adding a dataset never changes the others.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fxhash(spec.id));
    let mut start = 0;
    while start < rows {
        let n = BATCH_ROWS.min(rows - start);
        writer.write(&(spec.batch)(&mut rng, schema.clone(), start, n, rows)?)?;
        start += n;
    }
    writer.close()?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn utf8(values: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

fn field(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, true)
}

// Hospital admissions -------------------------------------------------------

fn admissions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("nhs_number", DataType::Utf8),
        field("patient_id", DataType::Utf8),
        field("age", DataType::Int32),
        field("age_band", DataType::Utf8),
        field("sex", DataType::Utf8),
        field("region", DataType::Utf8),
        field("postcode_district", DataType::Utf8),
        field("icd10_chapter", DataType::Utf8),
        field("admission_method", DataType::Utf8),
        field("admission_date", DataType::Date32),
        field("length_of_stay", DataType::Int32),
        field("discharge_destination", DataType::Utf8),
    ]))
}

fn age_band(age: i32) -> &'static str {
    match age {
        0..=4 => "0-4",
        5..=17 => "5-17",
        18..=29 => "18-29",
        30..=44 => "30-44",
        45..=64 => "45-64",
        65..=74 => "65-74",
        75..=84 => "75-84",
        _ => "85+",
    }
}

fn admissions_batch(
    rng: &mut ChaCha8Rng,
    schema: SchemaRef,
    start: u64,
    n: u64,
    total: u64,
) -> anyhow::Result<RecordBatch> {
    const DISTRICTS: [&str; 12] = [
        "NE1", "NE23", "LS12", "M14", "B15", "CV3", "NR2", "CB4", "BS8", "EX4", "E14", "SW9",
    ];
    const CHAPTERS: [&str; 10] = [
        "II", "IV", "V", "IX", "X", "XI", "XIII", "XIV", "XIX", "XXI",
    ];
    const DESTINATIONS: [&str; 4] = ["home", "care-home", "transfer", "died"];
    // Admissions run from 2019-01-01 over five years in row order, so the
    // file is sorted by date and date filters prune row groups.
    let first_day = 17_897; // 2019-01-01 as days since 1970-01-01
    let span = 5 * 365;
    let n = n as usize;
    let mut nhs = Vec::with_capacity(n);
    let (mut ids, mut ages, mut bands, mut sexes, mut regions, mut districts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut chapters, mut methods, mut dates, mut stays, mut dests) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for i in 0..n as u64 {
        let row = start + i;
        let age: i32 = if rng.random_bool(0.3) {
            rng.random_range(65..100)
        } else {
            rng.random_range(0..65)
        };
        let region_index = rng.random_range(0..REGIONS.len());
        // A population of 50,000 patients per million rows, so patients
        // have several admissions each.
        let patient = rng.random_range(0..(total / 20).max(1));
        nhs.push(format!(
            "{:010}",
            4_000_000_000 + patient * 7919 % 999_999_999
        ));
        ids.push(format!("P{patient:09}"));
        ages.push(age);
        bands.push(age_band(age).to_string());
        sexes.push(if rng.random_bool(0.51) { "F" } else { "M" }.to_string());
        regions.push(REGIONS[region_index].to_string());
        districts.push(
            DISTRICTS[(region_index * 2 + rng.random_range(0..2)) % DISTRICTS.len()].to_string(),
        );
        chapters.push(pick(rng, &CHAPTERS).to_string());
        let emergency = rng.random_bool(0.6);
        methods.push(if emergency { "emergency" } else { "elective" }.to_string());
        dates.push(first_day + (row * span / total.max(1)) as i32);
        let base: i32 = if age >= 75 { 6 } else { 2 };
        stays.push(base + rng.random_range(0..(if emergency { 15 } else { 6 })));
        dests.push(
            if rng.random_bool(0.85) {
                "home"
            } else {
                pick(rng, &DESTINATIONS)
            }
            .to_string(),
        );
    }
    Ok(RecordBatch::try_new(
        schema,
        vec![
            utf8(nhs),
            utf8(ids),
            Arc::new(Int32Array::from(ages)),
            utf8(bands),
            utf8(sexes),
            utf8(regions),
            utf8(districts),
            utf8(chapters),
            utf8(methods),
            Arc::new(Date32Array::from(dates)),
            Arc::new(Int32Array::from(stays)),
            utf8(dests),
        ],
    )?)
}

// Vaccination coverage --------------------------------------------------------

fn vaccination_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("region", DataType::Utf8),
        field("local_area", DataType::Utf8),
        field("year", DataType::Int32),
        field("vaccine", DataType::Utf8),
        field("age_group", DataType::Utf8),
        field("eligible", DataType::Int64),
        field("vaccinated", DataType::Int64),
        field("coverage_pct", DataType::Float64),
    ]))
}

fn vaccination_batch(
    rng: &mut ChaCha8Rng,
    schema: SchemaRef,
    start: u64,
    n: u64,
    _total: u64,
) -> anyhow::Result<RecordBatch> {
    const VACCINES: [(&str, &str); 6] = [
        ("MMR1", "24 months"),
        ("MMR2", "5 years"),
        ("DTaP/IPV/Hib/HepB", "12 months"),
        ("PCV", "12 months"),
        ("MenB", "12 months"),
        ("HPV", "13 years"),
    ];
    let n = n as usize;
    // One vector per column, in schema order.
    type Columns = (
        Vec<String>,
        Vec<String>,
        Vec<i32>,
        Vec<String>,
        Vec<String>,
        Vec<i64>,
        Vec<i64>,
        Vec<f64>,
    );
    let mut cols: Columns = Default::default();
    for i in 0..n as u64 {
        let row = start + i;
        let (vaccine, age_group) = VACCINES[(row % 6) as usize];
        let region = REGIONS[((row / 6) % 6) as usize];
        let year = 2010 + ((row / 36) % 15) as i32;
        let eligible: i64 = rng.random_range(200..20_000);
        let rate = rng.random_range(0.78..0.98);
        let vaccinated = (eligible as f64 * rate).round() as i64;
        cols.0.push(region.to_string());
        cols.1.push(format!(
            "{}-{:03}",
            &region[..2].to_uppercase(),
            (row / 540) % 200
        ));
        cols.2.push(year);
        cols.3.push(vaccine.to_string());
        cols.4.push(age_group.to_string());
        cols.5.push(eligible);
        cols.6.push(vaccinated);
        cols.7
            .push((vaccinated as f64 * 1000.0 / eligible as f64).round() / 10.0);
    }
    Ok(RecordBatch::try_new(
        schema,
        vec![
            utf8(cols.0),
            utf8(cols.1),
            Arc::new(Int32Array::from(cols.2)),
            utf8(cols.3),
            utf8(cols.4),
            Arc::new(Int64Array::from(cols.5)),
            Arc::new(Int64Array::from(cols.6)),
            Arc::new(Float64Array::from(cols.7)),
        ],
    )?)
}

// School results --------------------------------------------------------------

fn results_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("school_id", DataType::Utf8),
        field("school_name", DataType::Utf8),
        field("region", DataType::Utf8),
        field("year", DataType::Int32),
        field("phase", DataType::Utf8),
        field("pupils", DataType::Int32),
        field("pct_meeting_standard", DataType::Float64),
        field("avg_score", DataType::Float64),
        field("fsm_pct", DataType::Float64),
    ]))
}

fn school_name(rng: &mut ChaCha8Rng, id: u64, phase: &str) -> String {
    const PLACES: [&str; 10] = [
        "Riverside",
        "Oakfield",
        "St Anne's",
        "Hillcrest",
        "Meadow",
        "Northgate",
        "Kingsway",
        "Elm Park",
        "Harbour",
        "Moorland",
    ];
    let kind = if phase == "primary" {
        "Primary School"
    } else {
        "Academy"
    };
    let _ = rng;
    format!("{} {} {}", PLACES[(id % 10) as usize], kind, id % 97)
}

fn results_batch(
    rng: &mut ChaCha8Rng,
    schema: SchemaRef,
    start: u64,
    n: u64,
    _total: u64,
) -> anyhow::Result<RecordBatch> {
    let n = n as usize;
    // One vector per column, in schema order.
    type Columns = (
        Vec<String>,
        Vec<String>,
        Vec<String>,
        Vec<i32>,
        Vec<String>,
        Vec<i32>,
        Vec<f64>,
        Vec<f64>,
        Vec<f64>,
    );
    let mut cols: Columns = Default::default();
    for i in 0..n as u64 {
        let row = start + i;
        let school = row / 5;
        let phase = if school.is_multiple_of(3) {
            "secondary"
        } else {
            "primary"
        };
        let fsm: f64 = rng.random_range(2.0..55.0);
        let pct = (95.0 - fsm * 0.6 + rng.random_range(-12.0..12.0f64)).clamp(5.0, 100.0);
        cols.0.push(format!("{:06}", 100_000 + school));
        cols.1.push(school_name(rng, school, phase));
        cols.2.push(REGIONS[(school % 6) as usize].to_string());
        cols.3.push(2019 + (row % 5) as i32);
        cols.4.push(phase.to_string());
        cols.5.push(if phase == "primary" {
            rng.random_range(15..90)
        } else {
            rng.random_range(80..300)
        });
        cols.6.push((pct * 10.0).round() / 10.0);
        cols.7.push(((pct * 0.5 + 50.0) * 10.0).round() / 10.0);
        cols.8.push((fsm * 10.0).round() / 10.0);
    }
    Ok(RecordBatch::try_new(
        schema,
        vec![
            utf8(cols.0),
            utf8(cols.1),
            utf8(cols.2),
            Arc::new(Int32Array::from(cols.3)),
            utf8(cols.4),
            Arc::new(Int32Array::from(cols.5)),
            Arc::new(Float64Array::from(cols.6)),
            Arc::new(Float64Array::from(cols.7)),
            Arc::new(Float64Array::from(cols.8)),
        ],
    )?)
}

// School enrolment ------------------------------------------------------------

fn enrolment_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("school_id", DataType::Utf8),
        field("region", DataType::Utf8),
        field("year", DataType::Int32),
        field("grade", DataType::Int32),
        field("sex", DataType::Utf8),
        field("enrolled", DataType::Int32),
    ]))
}

fn enrolment_batch(
    rng: &mut ChaCha8Rng,
    schema: SchemaRef,
    start: u64,
    n: u64,
    _total: u64,
) -> anyhow::Result<RecordBatch> {
    let n = n as usize;
    // One vector per column, in schema order.
    type Columns = (
        Vec<String>,
        Vec<String>,
        Vec<i32>,
        Vec<i32>,
        Vec<String>,
        Vec<i32>,
    );
    let mut cols: Columns = Default::default();
    for i in 0..n as u64 {
        let row = start + i;
        let school = row / 24;
        cols.0.push(format!("{:06}", 100_000 + school));
        cols.1.push(REGIONS[(school % 6) as usize].to_string());
        cols.2.push(2020 + ((row / 2) % 12 / 6) as i32 * 2);
        cols.3.push(1 + ((row / 2) % 12) as i32);
        cols.4
            .push(if row.is_multiple_of(2) { "F" } else { "M" }.to_string());
        cols.5.push(rng.random_range(5..60));
    }
    Ok(RecordBatch::try_new(
        schema,
        vec![
            utf8(cols.0),
            utf8(cols.1),
            Arc::new(Int32Array::from(cols.2)),
            Arc::new(Int32Array::from(cols.3)),
            utf8(cols.4),
            Arc::new(Int32Array::from(cols.5)),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_for_a_seed() {
        let spec = &specs()[0];
        let schema = (spec.schema)();
        let mut a = ChaCha8Rng::seed_from_u64(7);
        let mut b = ChaCha8Rng::seed_from_u64(7);
        let x = (spec.batch)(&mut a, schema.clone(), 0, 100, 100).unwrap();
        let y = (spec.batch)(&mut b, schema, 0, 100, 100).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn every_manifest_parses() {
        for spec in specs() {
            crate::catalog::Manifest::parse(spec.manifest)
                .unwrap_or_else(|e| panic!("{}: {e}", spec.id));
        }
    }
}
