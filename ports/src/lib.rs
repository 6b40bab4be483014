//! lanparty local ports.
