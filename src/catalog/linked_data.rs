//! The catalogue as linked data for harvesters: the whole catalogue as a
//! DCAT-AP 3 `dcat:Catalog` in JSON-LD (what EU data portals harvest) and
//! each dataset as a schema.org `Dataset` (what search engines index).
//! Only published, unretired datasets, and only their public metadata: the
//! same facts `GET /v1/datasets/{id}` shows anyone; who may read the rows
//! is stated as the dataset's access rights, never anyone's grants.

use serde_json::{Value, json};

use super::Dataset;
use crate::domain::Tier;
use crate::formats::Format;

/// The EU access-rights vocabulary term for a tier.
fn access_right(tier: Tier) -> &'static str {
    match tier {
        Tier::Open => "http://publications.europa.eu/resource/authority/access-right/PUBLIC",
        Tier::Registered => {
            "http://publications.europa.eu/resource/authority/access-right/RESTRICTED"
        }
        Tier::Controlled => {
            "http://publications.europa.eu/resource/authority/access-right/NON_PUBLIC"
        }
    }
}

/// A licence as a URL: an SPDX identifier becomes its SPDX page.
fn license_url(license: &str) -> String {
    if license.starts_with("http://") || license.starts_with("https://") {
        license.to_owned()
    } else {
        format!("https://spdx.org/licenses/{license}.html")
    }
}

fn media_type_url(format: Format) -> String {
    let essence = format.media_type().split(';').next().unwrap_or_default();
    format!("https://www.iana.org/assignments/media-types/{essence}")
}

fn page_url(base: &str, dataset: &Dataset) -> String {
    format!("{base}/v1/datasets/{}", dataset.id())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The catalogue as a DCAT-AP 3 catalogue.
pub fn dcat_catalog<'a>(datasets: impl Iterator<Item = &'a Dataset>, base: &str) -> Value {
    let entries: Vec<Value> = datasets
        .filter(|d| d.manifest.is_live())
        .map(|d| dcat_dataset(d, base))
        .collect();
    json!({
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "foaf": "http://xmlns.com/foaf/0.1/",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
        },
        "@id": format!("{base}/v1/catalog.jsonld"),
        "@type": "dcat:Catalog",
        "dct:title": "Sluice data catalogue",
        "dct:description": "Datasets served through Sluice, with access decided per researcher by policy.",
        "foaf:homepage": { "@id": format!("{base}/v1/datasets") },
        "dcat:dataset": entries,
    })
}

fn dcat_dataset(dataset: &Dataset, base: &str) -> Value {
    let m = &dataset.manifest;
    let page = page_url(base, dataset);
    let distributions: Vec<Value> = Format::ALL
        .iter()
        .map(|&format| {
            json!({
                "@type": "dcat:Distribution",
                "dcat:accessURL": { "@id": format!("{page}/data?format={}", format.name()) },
                "dcat:mediaType": { "@id": media_type_url(format) },
                "dct:license": { "@id": license_url(&m.license) },
                "dct:accessRights": { "@id": access_right(m.tier) },
            })
        })
        .collect();
    let mut entry = json!({
        "@id": page,
        "@type": "dcat:Dataset",
        "dct:identifier": m.id,
        "dct:title": m.title,
        "dct:description": m.description,
        "dcat:keyword": m.keywords,
        "dcat:theme": m.sector,
        "dct:publisher": { "@type": "foaf:Agent", "foaf:name": m.publisher },
        "dct:license": { "@id": license_url(&m.license) },
        "dct:accessRights": { "@id": access_right(m.tier) },
        "dcat:version": m.version.to_string(),
        "dcat:landingPage": { "@id": page },
        "dcat:distribution": distributions,
    });
    if let Some(current) = dataset.current() {
        entry["dct:modified"] =
            json!({ "@value": rfc3339(current.published), "@type": "xsd:dateTime" });
    }
    entry
}

/// One dataset as a schema.org `Dataset`.
pub fn schema_org_dataset(dataset: &Dataset, base: &str) -> Value {
    let m = &dataset.manifest;
    let page = page_url(base, dataset);
    let downloads: Vec<Value> = Format::ALL
        .iter()
        .map(|&format| {
            json!({
                "@type": "DataDownload",
                "encodingFormat": format.media_type(),
                "contentUrl": format!("{page}/data?format={}", format.name()),
            })
        })
        .collect();
    let variables: Vec<Value> = m
        .columns
        .iter()
        .map(|c| json!({ "@type": "PropertyValue", "name": c.name, "description": c.description }))
        .collect();
    let conditions = match m.tier {
        Tier::Open => "Open to anyone.",
        Tier::Registered => "Registered researchers (a token with the researcher role).",
        Tier::Controlled => "Approved projects only, under a grant.",
    };
    let mut entry = json!({
        "@context": "https://schema.org/",
        "@type": "Dataset",
        "@id": page,
        "url": page,
        "identifier": m.id,
        "name": m.title,
        "description": m.description,
        "keywords": m.keywords,
        "license": license_url(&m.license),
        "publisher": { "@type": "Organization", "name": m.publisher },
        "creator": { "@type": "Organization", "name": m.publisher },
        "version": m.version.to_string(),
        "isAccessibleForFree": true,
        "conditionsOfAccess": conditions,
        "distribution": downloads,
        "variableMeasured": variables,
    });
    if let Some(current) = dataset.current() {
        entry["dateModified"] = json!(rfc3339(current.published));
    }
    entry
}
