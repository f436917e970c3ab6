#pragma once
// Internal to data/: RAII for HDF5 ids, and a guard that silences HDF5's own error printing so a
// bad file gives our one-line DataError rather than a page of HDF5 stack. The Debian HDF5 is built
// thread-safe, which keeps error stacks per thread: each thread that reads takes its own guard.
#include <hdf5.h>

#include <string>
#include <utility>

namespace shoestring::data::h5 {

class Id {
 public:
  Id() = default;
  Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  Id(Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      close_ = o.close_;
    }
    return *this;
  }
  ~Id() { reset(); }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = H5I_INVALID_HID;
  }
  hid_t release() { return std::exchange(id_, H5I_INVALID_HID); }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }
  operator hid_t() const { return id_; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  herr_t (*close_)(hid_t) = nullptr;
};

inline Id file(hid_t id) { return {id, H5Fclose}; }
inline Id dataset(hid_t id) { return {id, H5Dclose}; }
inline Id space(hid_t id) { return {id, H5Sclose}; }
inline Id plist(hid_t id) { return {id, H5Pclose}; }
inline Id attr(hid_t id) { return {id, H5Aclose}; }
inline Id type(hid_t id) { return {id, H5Tclose}; }
inline Id group(hid_t id) { return {id, H5Gclose}; }

// libhdf5 1.10.8 leaks internal ids after a metadata checksum failure, and its exit handler then
// prints "HDF5: infinite loop closing library" and a line of codes after our one-line error. So
// the library is told not to clean up at exit (the OS does; files are closed explicitly). Called
// before the first other HDF5 call of the process, from QuietErrors, which every entry point takes.
void skip_exit_cleanup();

class QuietErrors {
 public:
  QuietErrors() {
    skip_exit_cleanup();
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietErrors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietErrors(const QuietErrors&) = delete;
  QuietErrors& operator=(const QuietErrors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// File access properties for writing format 2: HDF5 1.10's newest file format, in which the
// superblock, every object header ("OHDR") and the chunk index carry checksums that libhdf5 checks
// on read, so damaged metadata fails a checksum instead of reaching libhdf5's parsers (1.10.8's
// parser of the older, unchecksummed object headers overflows on some corrupt ones). Files written
// so need HDF5 >= 1.10 to read.
Id checksummed_format();

// The innermost message of the current thread's HDF5 error stack ("" when empty), so a DataError
// can say why a read failed (e.g. "Fletcher32 checksum error").
std::string last_error();

}  // namespace shoestring::data::h5
