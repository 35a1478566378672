#include "kernels/cpu/parallel.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace trireme::kernels {
namespace {

// Workers started on demand and kept for the life of the process.
class Pool {
 public:
  static Pool& Get() {
    static Pool* pool = new Pool();  // never destroyed: workers may outlive main's statics
    return *pool;
  }

  void Run(std::vector<std::function<void()>>& tasks) {
    // tasks[0] runs here; the others on workers.
    std::mutex done_mu;
    std::condition_variable done_cv;
    size_t remaining = tasks.size() - 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (workers_.size() < tasks.size() - 1) {
        workers_.emplace_back([this] { Loop(); });
      }
      for (size_t i = 1; i < tasks.size(); ++i) {
        queue_.push_back([&, i] {
          tasks[i]();
          std::lock_guard<std::mutex> l(done_mu);
          if (--remaining == 0) done_cv.notify_one();
        });
      }
    }
    cv_.notify_all();
    tasks[0]();
    std::unique_lock<std::mutex> l(done_mu);
    done_cv.wait(l, [&] { return remaining == 0; });
  }

 private:
  void Loop() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !queue_.empty(); });
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> workers_;
};

}  // namespace

void ParallelFor(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& fn,
                 int64_t align, int64_t min_per_thread) {
  if (n <= 0) return;
  int64_t t =
      std::max<int64_t>(1, std::min<int64_t>(threads, n / std::max<int64_t>(1, min_per_thread)));
  if (t <= 1) {
    fn(0, n);
    return;
  }
  // Chunk size rounded up to `align`: chunk k covers [k * chunk, (k+1) * chunk).
  const int64_t chunk = ((n + t - 1) / t + align - 1) / align * align;
  std::vector<std::function<void()>> tasks;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t end = std::min(n, begin + chunk);
    tasks.push_back([&fn, begin, end] { fn(begin, end); });
  }
  if (tasks.size() == 1) {
    tasks[0]();
    return;
  }
  Pool::Get().Run(tasks);
}

}  // namespace trireme::kernels
