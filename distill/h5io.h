/* h5io.h - one-dimensional HDF5 datasets, as the training checkpoints and teacher caches keep
 * their small arrays. Errors come back as values (the caller turns HDF5's printing off). */
#ifndef SLMC_DISTILL_H5IO_H
#define SLMC_DISTILL_H5IO_H

#include <hdf5.h>

#include "formats/error.h"

/* Create (truncate) an HDF5 file that records no modification times, so that the same content
 * gives the same bytes (checkpoints compared across runs and rank counts): the file, or -1. */
hid_t h5_create_file(const char *path);
/* Write dataset `name` of n elements of `type` into file f (no modification time): 0, or -1. */
int h5_write_1d(hid_t f, const char *name, hid_t type, hsize_t n, const void *data);
/* Read dataset `name`, which must hold exactly n elements, into data; errors name `path` and
 * say the file is not `what` ("a slmc training checkpoint") when the dataset is missing. */
int h5_read_1d(hid_t f, const char *name, hid_t type, hsize_t n, void *data, const char *path, const char *what,
               slmc_err *err);

#endif
