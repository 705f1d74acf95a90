//! What [`crate::ServerTls`] and [`crate::ClientTls`] share: the files they were loaded from and
//! the config built from them, replaced whole by a reload.

use std::sync::{Arc, PoisonError, RwLock};

use crate::TlsFiles;

/// The files and the config new connections use.
pub(crate) struct Material<C> {
    files: TlsFiles,
    current: RwLock<Arc<C>>,
}

impl<C> Material<C> {
    pub(crate) fn new(files: TlsFiles, config: C) -> Self {
        Self {
            files,
            current: RwLock::new(Arc::new(config)),
        }
    }

    pub(crate) fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub(crate) fn current(&self) -> Arc<C> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the config with the one `build` makes from the files; on an error the config in
    /// use stays.
    pub(crate) fn reload<E>(&self, build: impl FnOnce(&TlsFiles) -> Result<C, E>) -> Result<(), E> {
        let config = Arc::new(build(&self.files)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }
}

impl<C> std::fmt::Debug for Material<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}
