// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as in iSCSI, ext4 and
// the checksums of Trireme's checkpoint files. SSE4.2's crc32 instruction
// when the CPU has it, a table otherwise (same values).
#ifndef TRIREME_RUNTIME_CHECKPOINT_CRC32C_H_
#define TRIREME_RUNTIME_CHECKPOINT_CRC32C_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace trireme {

// Extends `crc` (the value of the bytes so far; 0 for none) by n bytes.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

// The table path, whatever the CPU (for tests).
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n);

// "1a2b3c4d": 8 lowercase hex digits.
std::string Crc32cHex(uint32_t crc);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CHECKPOINT_CRC32C_H_
