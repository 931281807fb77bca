package io.zkcoord.client;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import zkcoord.v1.Common.Health;
import zkcoord.v1.Common.HealthStatus;

/**
 * Runs a lease's health checks, each in its own thread, each bounded by a timeout. A check
 * still running from an earlier heartbeat is not started again; it counts as failing.
 */
final class HealthChecks {
    private static final int MAX_MESSAGE_BYTES = 256;

    private final Map<String, HealthCheck> checks;
    private final Map<String, Future<String>> running = new HashMap<>();
    private final ExecutorService executor;

    HealthChecks(Map<String, HealthCheck> checks, String name) {
        this.checks = new LinkedHashMap<>(checks);
        this.executor = Executors.newCachedThreadPool(r -> {
            Thread thread = new Thread(r, name);
            thread.setDaemon(true);
            return thread;
        });
    }

    /** Null for a passing check, else why it fails. */
    static String outcome(Object result) {
        if (result == null || Boolean.TRUE.equals(result)) {
            return null;
        }
        if (Boolean.FALSE.equals(result)) {
            return "check failed";
        }
        if (result instanceof String reason) {
            return reason.isEmpty() ? "check failed" : reason;
        }
        return String.valueOf(result);
    }

    static String truncate(String message) {
        byte[] bytes = message.getBytes(StandardCharsets.UTF_8);
        if (bytes.length <= MAX_MESSAGE_BYTES) {
            return message;
        }
        String cut = new String(bytes, 0, MAX_MESSAGE_BYTES, StandardCharsets.UTF_8);
        // Drop a character cut in half (decoded as U+FFFD).
        return cut.endsWith("\uFFFD") ? cut.substring(0, cut.length() - 1) : cut;
    }

    /** Runs every check (at most {@code timeoutMs} in all) and returns the health to send. */
    synchronized Health run(long timeoutMs) {
        if (checks.isEmpty()) {
            return Health.newBuilder().setStatus(HealthStatus.HEALTH_STATUS_SERVING).build();
        }
        String noAnswer = "no answer within " + timeoutMs + " ms";
        Map<String, String> outcomes = new HashMap<>();
        List<String> started = new ArrayList<>();
        for (var entry : checks.entrySet()) {
            String name = entry.getKey();
            Future<String> previous = running.get(name);
            if (previous != null && !previous.isDone()) {
                outcomes.put(name, noAnswer);
                continue;
            }
            HealthCheck check = entry.getValue();
            running.put(name, executor.submit(() -> {
                try {
                    return outcome(check.check());
                } catch (Exception | Error e) {
                    return e.getClass().getSimpleName() + ": " + e.getMessage();
                }
            }));
            started.add(name);
        }
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        for (String name : started) {
            try {
                outcomes.put(name, running.get(name).get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS));
            } catch (TimeoutException e) {
                outcomes.put(name, noAnswer);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                outcomes.put(name, noAnswer);
            } catch (ExecutionException e) {
                outcomes.put(name, String.valueOf(e.getCause()));
            }
        }
        Health.Builder health = Health.newBuilder();
        boolean serving = true;
        for (String name : checks.keySet()) {
            String why = outcomes.get(name);
            var check = zkcoord.v1.Common.HealthCheck.newBuilder().setName(name);
            if (why == null) {
                check.setStatus(HealthStatus.HEALTH_STATUS_SERVING);
            } else {
                serving = false;
                check.setStatus(HealthStatus.HEALTH_STATUS_NOT_SERVING).setMessage(truncate(why));
            }
            health.addChecks(check);
        }
        return health.setStatus(serving ? HealthStatus.HEALTH_STATUS_SERVING : HealthStatus.HEALTH_STATUS_NOT_SERVING).build();
    }

    void shutdown() {
        executor.shutdownNow();
    }
}
