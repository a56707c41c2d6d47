//! Readers for the file formats the OOD literature distributes data in (METHODS §9).

pub mod cifar;
pub mod files;
pub mod mat;
pub mod npy;
pub mod svhn;
pub mod webvision;
