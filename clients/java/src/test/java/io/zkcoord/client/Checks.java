package io.zkcoord.client;

import io.grpc.Status;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Optional;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;

/** The assertions of the Java client's checks (no JUnit: plain exceptions, clear messages). */
final class Checks {
    private static final BufferedReader STDIN = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));

    private Checks() {}

    /** A failed check. */
    static final class CheckFailed extends AssertionError {
        private static final long serialVersionUID = 1L;

        CheckFailed(String message) {
            super(message);
        }
    }

    static void check(boolean condition, Object... what) {
        if (!condition) {
            StringBuilder message = new StringBuilder();
            for (Object part : what) {
                message.append(message.length() == 0 ? "" : " ").append(part);
            }
            throw new CheckFailed(message.length() == 0 ? "check failed" : message.toString());
        }
    }

    static void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static double seconds(long nanos) {
        return nanos / 1e9;
    }

    static void sleep(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Polls {@code probe} every 20 ms until it is true. */
    static void eventually(BooleanSupplier probe, String what, Duration timeout) {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!probe.getAsBoolean()) {
            check(System.nanoTime() - deadline < 0, "timed out after " + timeout + " waiting until " + what);
            sleep(20);
        }
    }

    static void eventually(BooleanSupplier probe, String what) {
        eventually(probe, what, Duration.ofSeconds(5));
    }

    /** Polls {@code probe} every 20 ms until it is present, and returns it. */
    static <T> T eventuallyPresent(Supplier<Optional<T>> probe, String what, Duration timeout) {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            Optional<T> value = probe.get();
            if (value.isPresent()) {
                return value.get();
            }
            check(System.nanoTime() - deadline < 0, "timed out after " + timeout + " waiting until " + what);
            sleep(20);
        }
    }

    /** Runs {@code call}, which must fail with {@code code}; returns the error. */
    static ZkcoordException expectError(Runnable call, Status.Code code) {
        try {
            call.run();
        } catch (ZkcoordException error) {
            check(error.code() == code, "expected " + code + ", got " + error);
            return error;
        }
        throw new CheckFailed("expected " + code + ", the call succeeded");
    }

    /** Asks the driver to do {@code what} and waits until it says it is done. */
    static void cue(String what) {
        say("cue " + what);
        String answer;
        try {
            answer = STDIN.readLine();
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        check("done".equals(answer == null ? null : answer.strip()), "driver answered " + answer + " to " + what);
    }

    /**
     * The elector's next event, which must be of {@code kind} (with {@code reason}). A suspension
     * in between (Lost("lease-unconfirmed") then Elected of the same term: zkcoord could not
     * confirm one heartbeat, e.g. on a loaded machine) is skipped and printed, unless that loss
     * is what is expected.
     */
    static <E extends LeadershipEvent> E expectEvent(LeaderElector elector, Class<E> kind, String reason, Duration timeout)
            throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        LeadershipEvent event;
        while (true) {
            event = elector.nextEvent(left(deadline)).orElse(null);
            boolean suspended = event instanceof LeadershipEvent.Lost lost && lost.reason().equals("lease-unconfirmed");
            boolean lossExpected = kind == LeadershipEvent.Lost.class && (reason == null || reason.equals("lease-unconfirmed"));
            if (!suspended || lossExpected) {
                break;
            }
            LeadershipEvent again = elector.nextEvent(left(deadline)).orElse(null);
            check(again instanceof LeadershipEvent.Elected && again.term() == event.term(),
                    elector.candidateId() + ": expected " + kind.getSimpleName() + ", got " + event + " then " + again);
            say("  " + elector.candidateId() + ": (suspended: " + event + ", then " + again + ")");
        }
        check(kind.isInstance(event), elector.candidateId() + ": expected " + kind.getSimpleName() + ", got " + event);
        if (reason != null) {
            check(((LeadershipEvent.Lost) event).reason().equals(reason), elector.candidateId() + ": expected reason " + reason + ", got " + event);
        }
        say("  " + elector.candidateId() + ": " + event);
        return kind.cast(event);
    }

    static <E extends LeadershipEvent> E expectEvent(LeaderElector elector, Class<E> kind, String reason) throws InterruptedException {
        return expectEvent(elector, kind, reason, Duration.ofSeconds(5));
    }

    static Duration left(long deadline) {
        return Duration.ofNanos(Math.max(0, deadline - System.nanoTime()));
    }

    static void noEvent(LeaderElector elector, Duration within) throws InterruptedException {
        Optional<LeadershipEvent> event = elector.nextEvent(within);
        check(event.isEmpty(), elector.candidateId() + ": unexpected " + event);
    }

    /**
     * Samples the keeper for {@code seconds}: a confirmation never runs out while answers come,
     * and the lease is never lost. Unconfirmed answers (an instance that could not prove its
     * ZooKeeper session fresh in time) are tolerated and counted, but must not last a ttl.
     */
    static void staysConfirmed(LeaseKeeper keeper, double seconds, String what) {
        long started = System.nanoTime();
        int unconfirmed = 0;
        Long unconfirmedSince = null;
        while (System.nanoTime() - started < (long) (seconds * 1e9)) {
            LeaseStatus status = keeper.status();
            check(status.state() != LeaseStatus.State.LOST, what, "lost", keeper);
            if (status.state() == LeaseStatus.State.CONFIRMED) {
                check(status.confirmedNow(), what, "a confirmation ran out while heartbeats were answered", keeper);
                unconfirmedSince = null;
            } else {
                unconfirmed++;
                if (unconfirmedSince == null) {
                    unconfirmedSince = System.nanoTime();
                }
                check(System.nanoTime() - unconfirmedSince < keeper.ttlMs() * 1_000_000L, what, "unconfirmed for a ttl", keeper);
            }
            sleep(50);
        }
        eventually(keeper::isConfirmed, what + ": confirmed at the end", Duration.ofMillis(keeper.ttlMs()));
        if (unconfirmed > 0) {
            say("  (" + what + ": " + unconfirmed + " samples unconfirmed by zkcoord)");
        }
    }
}
