//! Object stores known by their URLs: `s3://`, `gs://`, `az://` and
//! `http(s)://` stores are made the first time a URL names them,
//! configured from the environment as each cloud's own tools are
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`). Every session ferry builds has this
//! registry, so a query that reads a URL needs no registration first: the
//! client, and a cluster's scheduler and executors alike.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::ObjectStore;
use url::Url;

/// The stores registered so far, and the store of any other URL made from
/// the environment.
#[derive(Debug, Default)]
pub struct FromEnv {
    known: DefaultObjectStoreRegistry,
}

impl ObjectStoreRegistry for FromEnv {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.known.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.known.get_store(url) {
            return Ok(store);
        }
        let store = store_for(url)?;
        self.known.register_store(url, Arc::clone(&store));
        Ok(store)
    }
}

/// The store holding `url`'s objects, configured from the environment.
pub fn store_for(url: &Url) -> Result<Arc<dyn ObjectStore>> {
    let bucket = url.host_str().unwrap_or_default();
    Ok(match url.scheme() {
        "s3" | "s3a" => Arc::new(object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).build()?),
        "gs" => Arc::new(object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket).build()?),
        "az" | "abfs" | "abfss" => {
            Arc::new(object_store::azure::MicrosoftAzureBuilder::from_env().with_container_name(bucket).build()?)
        }
        // object_store refuses plain `http://` unless told: the URL says it.
        "http" | "https" => Arc::new(
            object_store::http::HttpBuilder::new()
                .with_url(url.origin().ascii_serialization())
                .with_client_options(object_store::ClientOptions::new().with_allow_http(url.scheme() == "http"))
                .build()?,
        ),
        "file" => Arc::new(object_store::local::LocalFileSystem::new()),
        other => {
            return Err(DataFusionError::Plan(format!(
                "ferry cannot read `{other}://` URLs; use a local path or s3://, gs://, az://, http(s)://"
            )));
        }
    })
}
