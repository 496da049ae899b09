// Tensor ownership, views and device placement; Shape arithmetic.
#include <cmath>
#include <cstdint>

#include <gtest/gtest.h>

#include "core/tensor.h"

namespace strata {
namespace {

TEST(Shape, NumelRowsColsAndEquality) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.rows(), 6);
  EXPECT_EQ(s.cols(), 4);
  EXPECT_EQ(s.dim(-1), 4);
  EXPECT_EQ(s, (Shape{2, 3, 4}));
  EXPECT_NE(s, (Shape{2, 12}));
  EXPECT_EQ(s.to_string(), "(2, 3, 4)");
  EXPECT_EQ(Shape{}.numel(), 1);
  EXPECT_EQ((Shape{0, 5}).numel(), 0);
  EXPECT_EQ((Shape{5, 0}).rows(), 5);  // an empty row is still a row
  EXPECT_EQ((Shape{7}).rows(), 1);
}

TEST(Tensor, AllocationIsAlignedAndZeroed) {
  Tensor t = Tensor::zeros({3, 5}, DType::kF32);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % kCpuAlignment, 0u);
  EXPECT_EQ(t.nbytes(), 60u);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(t.f32()[i], 0.0f);
  EXPECT_EQ(t.to_string(), "f32(3, 5)@cpu");
  EXPECT_TRUE(t.device().is_cpu());
}

TEST(Tensor, RowsAndViewShareStorageCloneDoesNot) {
  Tensor t = Tensor::from_f32({4, 2}, {0, 1, 2, 3, 4, 5, 6, 7});
  Tensor mid = t.rows(1, 3);
  EXPECT_EQ(mid.shape(), (Shape{2, 2}));
  EXPECT_EQ(mid.f32()[0], 2.0f);
  mid.f32()[0] = 20.0f;
  EXPECT_EQ(t.f32()[2], 20.0f);
  Tensor flat = t.view({8});
  EXPECT_EQ(flat.f32()[2], 20.0f);
  Tensor copy = t.clone();
  copy.f32()[0] = -1.0f;
  EXPECT_EQ(t.f32()[0], 0.0f);
  EXPECT_EQ(t.rows(4, 4).numel(), 0);
}

TEST(Tensor, CastUsesExactCodecs) {
  Tensor t = Tensor::from_f32({4}, {1.0f, 1.00390625f, 500.0f, -0.0f});
  Tensor b = t.cast(DType::kBF16);
  EXPECT_EQ(b.dtype(), DType::kBF16);
  EXPECT_EQ(b.data<uint16_t>()[0], 0x3f80);
  EXPECT_EQ(b.data<uint16_t>()[1], 0x3f80);  // 1 + 2^-8 is a tie: rounds to even
  Tensor q = t.cast(DType::kF8E4M3);
  EXPECT_EQ(q.data<uint8_t>()[2], 0x7e);  // 500 saturates to 448
  Tensor back = q.cast(DType::kF32);
  EXPECT_EQ(back.f32()[2], 448.0f);
  EXPECT_TRUE(std::signbit(back.f32()[3]));
}

TEST(TensorDeathTest, MisuseFailsWithAHint) {
  Tensor t = Tensor::zeros({2, 2}, DType::kBF16);
  EXPECT_DEATH(t.f32(), "expected an f32 tensor, got bf16");
  EXPECT_DEATH(t.rows(1, 3), "rows \\[1, 3\\) of shape \\(2, 2\\)");
  EXPECT_DEATH(t.view({3}), "view \\(3\\) of \\(2, 2\\)");
}

TEST(Device, CpuCopiesAndCudaAbsenceIsExplained) {
  float src[3] = {1, 2, 3}, dst[3] = {};
  device_copy(dst, Device::cpu(), src, Device::cpu(), sizeof src);
  EXPECT_EQ(dst[2], 3.0f);
  EXPECT_EQ(Device::cuda(1).to_string(), "cuda:1");
  if (cuda_device_count() == 0) {
    EXPECT_FALSE(cuda_unavailable_reason().empty());
  } else {
    Tensor t = Tensor::from_f32({3}, {1, 2, 3});
    Tensor g = t.to(Device::cuda(0));
    Tensor back = g.to(Device::cpu());
    EXPECT_EQ(back.f32()[1], 2.0f);
  }
}

}  // namespace
}  // namespace strata
