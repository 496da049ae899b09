// Added-token matching and pre-tokenizer steps (what lives here: pre_tokenize.h), each following
// its `tokenizers` original (AddedVocabulary::find_matches, NormalizedString::split, ByteLevel).
#include "data/pre_tokenize.h"

#include <algorithm>

namespace strata {

// ---------------------------------------------------------------------------------------------
// Added tokens
// ---------------------------------------------------------------------------------------------

void AddedTokenSet::add(std::string pattern, int token) {
  if (pattern.empty()) return;
  by_first_byte_[static_cast<uint8_t>(pattern[0])].push_back(static_cast<int>(patterns_.size()));
  patterns_.push_back({std::move(pattern), token});
}

void AddedTokenSet::finish() {
  for (auto& list : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(),
                     [&](int a, int b) { return patterns_[a].first.size() > patterns_[b].first.size(); });
  }
}

std::optional<AddedTokenSet::Match> AddedTokenSet::find(std::string_view text, size_t from) const {
  for (size_t i = from; i < text.size(); ++i) {
    for (const int k : by_first_byte_[static_cast<uint8_t>(text[i])]) {
      const std::string& p = patterns_[k].first;
      if (text.compare(i, p.size(), p) == 0) return Match{i, p.size(), patterns_[k].second};
    }
  }
  return std::nullopt;
}

void split_added(std::string_view s, const AddedTokenSet& set, const std::vector<AddedToken>& tokens,
                 std::vector<AddedSegment>& out) {
  out.clear();
  size_t start_offset = 0, pos = 0;
  if (!set.empty()) {
    while (const auto m = set.find(s, pos)) {
      size_t start = m->start, stop = m->start + m->length;
      pos = stop;  // the next search starts after the literal match, whatever rstrip takes
      const AddedToken& t = tokens[m->token];
      if (t.single_word) {
        size_t unused = 0;
        const bool start_space = start == 0 || !is_word_char(previous_code_point(s, start, &unused));
        size_t after = stop;
        const bool stop_space = stop == s.size() || !is_word_char(next_code_point(s, after));
        if (!start_space || !stop_space) continue;
      }
      if (t.lstrip) {
        size_t left = start;
        while (left > 0) {
          size_t begin = 0;
          if (!is_white_space(previous_code_point(s, left, &begin))) break;
          left = begin;
        }
        start = std::max(left, start_offset);
      }
      if (t.rstrip) {
        while (stop < s.size()) {
          size_t after = stop;
          if (!is_white_space(next_code_point(s, after))) break;
          stop = after;
        }
      }
      if (start_offset < start) out.push_back({start_offset, start, -1});
      out.push_back({start, stop, t.id});
      start_offset = stop;
    }
  }
  if (start_offset != s.size() || s.empty()) out.push_back({start_offset, s.size(), -1});
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer steps
// ---------------------------------------------------------------------------------------------

namespace {

// Split: (begin, end) of the pieces `behavior` keeps, as NormalizedString::split computes them.
void split_piece(std::string_view s, const PreTokenizerStep& step, std::vector<std::string>& out) {
  std::vector<std::pair<size_t, size_t>> matches;
  if (step.regex) {
    matches = step.regex->find_all(s);
  } else if (!step.literal.empty()) {
    const size_t n = step.literal.size();
    for (size_t at = s.find(step.literal); at != std::string_view::npos; at = s.find(step.literal, at + n)) {
      matches.emplace_back(at, at + n);
    }
  }
  struct Part {
    size_t begin, end;
    bool match;
  };
  std::vector<Part> parts;
  size_t prev = 0;
  for (const auto& [begin, end] : matches) {
    if (prev != begin) parts.push_back({prev, begin, false});
    parts.push_back({begin, end, true});
    prev = end;
  }
  if (prev != s.size()) parts.push_back({prev, s.size(), false});
  if (step.invert) {
    for (Part& p : parts) p.match = !p.match;
  }
  std::vector<std::pair<size_t, size_t>> keep;
  bool previous_match = false;
  switch (step.behavior) {
    case SplitBehavior::kIsolated:
      for (const Part& p : parts) keep.emplace_back(p.begin, p.end);
      break;
    case SplitBehavior::kRemoved:
      for (const Part& p : parts) {
        if (!p.match) keep.emplace_back(p.begin, p.end);
      }
      break;
    case SplitBehavior::kContiguous:
      for (const Part& p : parts) {
        if (p.match == previous_match && !keep.empty()) {
          keep.back().second = p.end;
        } else {
          keep.emplace_back(p.begin, p.end);
        }
        previous_match = p.match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Part& p : parts) {
        if (p.match && !previous_match && !keep.empty()) {
          keep.back().second = p.end;
        } else {
          keep.emplace_back(p.begin, p.end);
        }
        previous_match = p.match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->match && !previous_match && !keep.empty()) {
          keep.back().first = it->begin;
        } else {
          keep.emplace_back(it->begin, it->end);
        }
        previous_match = it->match;
      }
      std::reverse(keep.begin(), keep.end());
      break;
  }
  for (const auto& [begin, end] : keep) {
    if (end > begin) out.emplace_back(s.substr(begin, end - begin));
  }
}

}  // namespace

void apply_step(const PreTokenizerStep& step, std::vector<std::string>& pieces) {
  std::vector<std::string> next;
  next.reserve(pieces.size());
  for (std::string& piece : pieces) {
    if (step.kind == PreTokenizerStep::Kind::kSplit) {
      split_piece(piece, step, next);
      continue;
    }
    // ByteLevel: the prefix space goes on every piece reaching it, then the GPT-2 split, then
    // every byte becomes its alphabet character.
    if (step.add_prefix_space && piece[0] != ' ') piece.insert(piece.begin(), ' ');
    const size_t first = next.size();
    if (step.regex) {
      split_piece(piece, step, next);
    } else {
      next.push_back(std::move(piece));
    }
    for (size_t i = first; i < next.size(); ++i) next[i] = byte_level_encode(next[i]);
  }
  pieces = std::move(next);
}

}  // namespace strata
