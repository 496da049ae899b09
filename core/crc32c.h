// CRC-32C (Castagnoli), as in iSCSI, ext4 and leveldb: crc32c("123456789") == 0xE3069283.
// Extends `crc` (the CRC of the bytes before) by n bytes; start from 0. Uses the SSE4.2 crc32
// instruction when the CPU has it, else the portable table-driven (slicing-by-8) version.
#pragma once

#include <cstddef>
#include <cstdint>

namespace strata {

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n);
inline uint32_t crc32c(const void* data, size_t n) { return crc32c_extend(0, data, n); }
uint32_t crc32c_extend_portable(uint32_t crc, const void* data, size_t n);  // slicing-by-8

}  // namespace strata
