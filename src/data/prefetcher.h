// Runs a pure batch function on worker threads ahead of the consumer.
//
// Batches come back strictly in index order, so the result does not depend
// on the number of workers; at most `depth` batches wait in memory. An
// exception thrown while making a batch reaches the consumer when it asks for
// that batch. Destroying the prefetcher mid-epoch stops the workers.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace mpq::data {

template <typename T>
class Prefetcher {
 public:
  // Produces make(begin) .. make(end - 1) with `workers` threads (0: on the
  // consumer's thread, when asked), keeping at most `depth` ready.
  Prefetcher(std::function<T(int64_t)> make, int64_t begin, int64_t end, int workers, int depth)
      : make_(std::move(make)), next_make_(begin), next_take_(begin), end_(end), depth_(std::max(1, depth)) {
    for (int w = 0; w < workers; ++w) threads_.emplace_back([this] { work(); });
  }
  ~Prefetcher() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  bool done() {
    std::lock_guard<std::mutex> lock(mu_);
    return next_take_ >= end_;
  }

  // The next batch in order; rethrows what making it threw.
  T next() {
    if (threads_.empty()) return make_(next_take_++);
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t i = next_take_++;
    cv_.notify_all();  // the consumer moved on: room for one more
    cv_.wait(lock, [&] { return ready_.count(i) > 0; });
    Slot s = std::move(ready_.at(i));
    ready_.erase(i);
    lock.unlock();
    cv_.notify_all();  // a worker may wait for room
    if (s.error) std::rethrow_exception(s.error);
    return std::move(s.value);
  }

 private:
  struct Slot {
    T value{};
    std::exception_ptr error;
  };

  void work() {
    for (;;) {
      int64_t i;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || (next_make_ < end_ && next_make_ < next_take_ + depth_); });
        if (stop_) return;
        i = next_make_++;
      }
      Slot s;
      try {
        s.value = make_(i);
      } catch (...) {
        s.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        ready_.emplace(i, std::move(s));
      }
      cv_.notify_all();
    }
  }

  std::function<T(int64_t)> make_;
  int64_t next_make_, next_take_, end_;
  int depth_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int64_t, Slot> ready_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace mpq::data
