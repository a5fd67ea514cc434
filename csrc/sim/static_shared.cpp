// Static __shared__ at a block's start (see static_shared.h).
#include "static_shared.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "runtime_api.h"

#if defined(__SANITIZE_THREAD__)
// Resets TSan's shadow of a range, as for new memory (the annotation meant for that,
// AnnotateNewMemory, is a no-op in GCC 12's libtsan; this is the one call that reaches TSan's
// MemoryResetRange, through its Java heap interface, whose setup only debug builds check).
extern "C" void __tsan_java_alloc(unsigned long address, unsigned long size);
#endif

namespace kdops::sim::detail {
namespace {

// This module's TLS segment: its size, and where the calling OS thread's copy lies.
struct TlsBlock {
  char* begin = nullptr;
  size_t size = 0;
};

TlsBlock module_tls_block() {
  TlsBlock block;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        if (info->dlpi_tls_data == nullptr) return 0;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          if (info->dlpi_phdr[i].p_type != PT_TLS) continue;
          char* begin = static_cast<char*>(info->dlpi_tls_data);
          const char* mine = reinterpret_cast<const char*>(&current_thread);
          if (mine >= begin && mine < begin + info->dlpi_phdr[i].p_memsz) {
            *static_cast<TlsBlock*>(out) = TlsBlock{begin, info->dlpi_phdr[i].p_memsz};
            return 1;
          }
        }
        return 0;
      },
      &block);
  return block;
}

struct Range {
  size_t offset, size;  // in the TLS segment
};

// Function-local thread_local statics of the simulator and of libraries: not shared memory.
bool library_or_runtime(const char* name) {
  static const char* const kPrefixes[] = {"_ZZN5kdops3sim", "_ZZN8pybind11", "_ZZNSt", "_ZZSt", "_ZZN3c10",
                                          "_ZZN2at",        "_ZZN5torch",    "_ZZN9__gnu_cxx"};
  for (const char* prefix : kPrefixes) {
    if (std::strncmp(name, prefix, std::strlen(prefix)) == 0) return true;
  }
  return false;
}

// The static __shared__ variables of the module holding this function, from its ELF .symtab.
std::vector<Range> shared_variables() {
  std::vector<Range> ranges;
  Dl_info info;
  if (dladdr(reinterpret_cast<const void*>(&shared_variables), &info) == 0 || info.dli_fname == nullptr) return ranges;
  const int fd = open(info.dli_fname[0] != '\0' ? info.dli_fname : "/proc/self/exe", O_RDONLY);
  if (fd < 0) return ranges;
  struct stat st;
  void* map = fstat(fd, &st) == 0 ? mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  close(fd);
  if (map == MAP_FAILED) return ranges;
  const char* file = static_cast<const char*>(map);
  const auto* header = reinterpret_cast<const Elf64_Ehdr*>(file);
  const auto* sections = reinterpret_cast<const Elf64_Shdr*>(file + header->e_shoff);
  for (int s = 0; s < header->e_shnum; ++s) {
    if (sections[s].sh_type != SHT_SYMTAB) continue;
    const auto* symbols = reinterpret_cast<const Elf64_Sym*>(file + sections[s].sh_offset);
    const char* names = file + sections[sections[s].sh_link].sh_offset;
    for (size_t i = 0; i < sections[s].sh_size / sizeof(Elf64_Sym); ++i) {
      const Elf64_Sym& sym = symbols[i];
      const char* name = names + sym.st_name;
      if (ELF64_ST_TYPE(sym.st_info) != STT_TLS || sym.st_shndx == SHN_UNDEF || sym.st_size == 0) continue;
      if (std::strncmp(name, "_ZZ", 3) != 0 || library_or_runtime(name)) continue;
      ranges.push_back(Range{sym.st_value, sym.st_size});  // st_value: the offset in the TLS segment
    }
  }
  munmap(map, st.st_size);
  return ranges;
}

// The module's static __shared__ variables, found once.
const std::vector<Range>& shared_ranges() {
  static std::once_flag found;
  static std::vector<Range> ranges;
  std::call_once(found, [] { ranges = shared_variables(); });
  return ranges;
}

}  // namespace

void poison_static_shared() {
  static thread_local const TlsBlock tls = module_tls_block();
  if (tls.begin == nullptr) return;
  for (const Range& r : shared_ranges()) {
    if (r.offset + r.size <= tls.size) std::memset(tls.begin + r.offset, 0xff, r.size);
  }
}

bool in_static_shared(const void* address) {
  static thread_local const TlsBlock tls = module_tls_block();
  const char* a = static_cast<const char*>(address);
  if (tls.begin == nullptr || a < tls.begin || a >= tls.begin + tls.size) return false;
  const size_t offset = static_cast<size_t>(a - tls.begin);
  for (const Range& r : shared_ranges()) {
    if (offset >= r.offset && offset < r.offset + r.size) return true;
  }
  return false;
}

void forget_static_shared_accesses() {
#if defined(__SANITIZE_THREAD__)
  static thread_local const TlsBlock tls = module_tls_block();
  if (tls.begin == nullptr) return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(tls.begin) & ~uintptr_t{7};
  const uintptr_t end = (reinterpret_cast<uintptr_t>(tls.begin) + tls.size + 7) & ~uintptr_t{7};
  __tsan_java_alloc(begin, end - begin);
#endif
}

}  // namespace kdops::sim::detail
