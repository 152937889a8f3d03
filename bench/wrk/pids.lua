-- Counts responses per pid named in the body ("hello from pid N") and
-- prints "pid N COUNT" lines when wrk is done: the fairness measurement.
counts = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  local pid = body:match("pid (%d+)")
  if pid then
    counts[pid] = (counts[pid] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for pid, n in pairs(thread:get("counts")) do
      total[pid] = (total[pid] or 0) + n
    end
  end
  for pid, n in pairs(total) do
    io.write(string.format("pid %s %d\n", pid, n))
  end
end
