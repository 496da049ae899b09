// Shape: up to kMaxDims extents, row-major, stored inline (no allocation). Tensor shapes in
// comments follow the glossary of STYLE.md: B batch, T time, C channels, and so on.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>

#include "core/check.h"

namespace strata {

class Shape {
 public:
  static constexpr int kMaxDims = 6;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    CHECK_LE(static_cast<int>(dims.size()), kMaxDims) << "too many dimensions";
    for (int64_t d : dims) push_back(d);
  }

  int rank() const { return rank_; }
  int64_t operator[](int i) const {
    CHECK(i >= 0 && i < rank_) << "dim " << i << " of a rank-" << rank_ << " shape";
    return dims_[i];
  }
  int64_t& operator[](int i) {
    CHECK(i >= 0 && i < rank_) << "dim " << i << " of a rank-" << rank_ << " shape";
    return dims_[i];
  }
  // Dimension counted from the end when negative: dim(-1) is the innermost.
  int64_t dim(int i) const { return (*this)[i < 0 ? rank_ + i : i]; }
  void push_back(int64_t d) {
    CHECK_LT(rank_, kMaxDims);
    CHECK_GE(d, 0) << "negative extent";
    dims_[rank_++] = d;
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  // Product of all extents but the last: the number of rows of a row-major matrix view.
  int64_t rows() const {
    int64_t n = 1;
    for (int i = 0; i + 1 < rank_; ++i) n *= dims_[i];
    return n;
  }
  int64_t cols() const { return rank_ == 0 ? 1 : dims_[rank_ - 1]; }

  bool operator==(const Shape& o) const {
    if (rank_ != o.rank_) return false;
    for (int i = 0; i < rank_; ++i)
      if (dims_[i] != o.dims_[i]) return false;
    return true;
  }
  bool operator!=(const Shape& o) const { return !(*this == o); }

  std::string to_string() const {
    std::string s = "(";
    for (int i = 0; i < rank_; ++i) {
      if (i) s += ", ";
      s += std::to_string(dims_[i]);
    }
    return s + ")";
  }

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int rank_ = 0;
};

inline std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.to_string(); }

}  // namespace strata
