"""The batched MuJoCo step and its per-step Jacobians, on numpy float64 arrays.

One environment step of B trajectories is one call of MuJoCo's multithreaded batch
(`mujoco.batch.Batch`, kept with its thread pool for the life of the system): the rows of the
physics state are written into the batch, the controls held for ``frame_skip`` substeps, and
the rows read back. The physics state of a trajectory is the mjtState vector

    s = mjSTATE_FULLPHYSICS | mjSTATE_WARMSTART = (time, qpos, qvel, act, history,
        qacc_warmstart, plugin_state, plastic)

(the solver's warmstart is carried so that a trajectory is bit-identical to one continuous
MjData, as in gymnasium). Models that read contact forces (the Ant) also get the "extras" y
that gymnasium reads after ``mj_step``: the forward body's xy position and cfrc_ext of bodies
1.., after ``mj_rnePostConstraint`` on each simulation's own MjData (a persistent batch).

Jacobians. With x = (dq, qvel, act) MuJoCo's tangent coordinates (2 nv + na; dq in the
joint's tangent space: world translation and body-frame rotation for free joints, see
``mj_integratePos``), ``mujoco.mjd_transitionFD`` gives each substep's A_k = dx_{k+1}/dx_k and
B_k = dx_{k+1}/du (centered differences). Over the frame skip F,

    J_x = A_{F-1} ... A_0,    J_u = sum_k A_{F-1} ... A_{k+1} B_k,

and y (read at the last substep's state x_{F-1}) gets its Jacobian by centered differences of
``mj_forward`` + ``mj_rnePostConstraint``. The state coordinates s relate to x through
dq = P(q) dqpos and dqpos' = G(q') dq', where for a quaternion q (MuJoCo's q' = q * exp(w/2))

    G(q) = 0.5 L(q)[:, 1:],      P(q) = 2 L(conj q)[1:, :] / |q|^2      (P G = I)

with L(q) p = q * p; P also drops the radial direction, which MuJoCo normalises away. time,
warmstart, history and plugin coordinates get zero derivatives (they are bookkeeping or, for
the warmstart, only seed the solver). The RK4 integrator has no ``mjd_transitionFD``.
"""
from __future__ import annotations

import concurrent.futures
import os
from typing import Any

import numpy as np

from .models import ModelSpec, import_mujoco

__all__ = ["Simulator", "FD_EPS"]

FD_EPS = 1e-6  # centered finite-difference step of the transition Jacobians


def _left(q: np.ndarray) -> np.ndarray:
    """``[..., 4, 4]`` matrices L(q) with L(q) p = q * p (quaternions (w, x, y, z))."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    rows = [[w, -x, -y, -z], [x, w, -z, y], [y, z, w, -x], [z, -y, x, w]]
    return np.stack([np.stack(r, -1) for r in rows], -2)


class Simulator:
    """A MuJoCo model stepped in batches, with per-step Jacobians (see the module docstring).

    Args:
        model: the MjModel (not modified).
        spec: its `ModelSpec` (frame skip, whether it reads contact forces).
        threads: threads of the batch and of the Jacobian loop (default: all CPUs).
    """

    def __init__(self, model: Any, spec: ModelSpec, threads: int | None = None):
        mj = self.mj = import_mujoco()
        from mujoco import batch as mjbatch
        self._mjbatch = mjbatch
        self.model, self.spec, self.frame_skip = model, spec, spec.frame_skip
        self.threads = threads or len(os.sched_getaffinity(0))
        self.state_spec = int(mj.mjtState.mjSTATE_FULLPHYSICS | mj.mjtState.mjSTATE_WARMSTART)
        self.full_spec = int(mj.mjtState.mjSTATE_INTEGRATION)
        self.nq, self.nv, self.na, self.nu = model.nq, model.nv, model.na, model.nu
        self.ndx = 2 * self.nv + self.na
        offsets = self._offsets()
        self.n = mj.mj_stateSize(model, self.state_spec)
        # our columns inside a batch row (the mjSTATE_INTEGRATION vector), and the controls'
        self.columns = np.concatenate([np.arange(o, o + s) for o, s, in_ours in offsets.values()
                                       if in_ours]).astype(np.int64)
        c0, cs, _ = offsets[int(mj.mjtState.mjSTATE_CTRL)]
        self.ctrl_columns = np.arange(c0, c0 + cs)
        ours = [(bit, s) for bit, (_, s, in_ours) in offsets.items() if in_ours]
        start = {bit: sum(s for b, s in ours if b < bit) for bit, _ in ours}
        self.qpos_at = start[int(mj.mjtState.mjSTATE_QPOS)]
        self.qvel_at = start[int(mj.mjtState.mjSTATE_QVEL)]
        self.act_at = start[int(mj.mjtState.mjSTATE_ACT)]
        self.n_extras = (2 + 6 * (model.nbody - 1)) if spec.contact else 0
        self._maps = self._tangent_maps()
        self._batch, self._ids = None, {}
        self._pool, self._datas = None, []

    def _offsets(self) -> dict[int, tuple[int, int, bool]]:
        """For each mjtState component: (offset in an mjSTATE_INTEGRATION row, size, ours)."""
        mj, out, offset = self.mj, {}, 0
        bit = 1
        while bit <= self.full_spec:
            if bit & self.full_spec:
                size = mj.mj_stateSize(self.model, bit)
                out[bit] = (offset, size, bool(bit & self.state_spec))
                offset += size
            bit <<= 1
        return out

    # ---- the batched forward step ----

    def _batch_for(self, b: int) -> Any:
        if self._batch is None or self._batch.nsim < b:
            self._batch = self._mjbatch.Batch(self.model, nsim=b, nthread=self.threads,
                                        persistent=self.spec.contact)
            self._batch.reset()
        return self._batch

    def step(self, physics: np.ndarray, ctrl: np.ndarray,
             live: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One environment step of the ``live`` rows.

        Args:
            physics: ``[B, n]`` float64 states; ctrl: ``[B, nu]`` float64 controls;
            live: ``[B]`` bool, rows to simulate (the others are copied through).
        Returns:
            ``(physics [B, n], extras [B, n_extras], failed [B] bool)``; a row whose simulation
            raised or raised a MuJoCo warning (an unstable simulation, which MuJoCo resets) is
            ``failed`` and NaN.
        """
        b = physics.shape[0]
        batch = self._batch_for(b)
        rows = batch.state[:b]
        rows[:, self.columns] = physics
        rows[:, self.ctrl_columns] = ctrl
        ids = np.flatnonzero(live).astype(np.int32)
        failed = np.zeros(b, dtype=bool)
        counts = batch.warning[:b, :, 1].sum(1)
        if ids.size:
            try:
                batch.step(None if ids.size == batch.nsim else ids, nstep=self.frame_skip)
            except self._mjbatch.SimulationError as err:
                failed[err.ids] = True
        failed |= batch.warning[:b, :, 1].sum(1) > counts
        out = rows[:, self.columns].copy()
        extras = np.zeros((b, self.n_extras))
        if self.n_extras:
            self._pooled(self._read_extras, np.setdiff1d(ids, np.flatnonzero(failed)), extras)
        out[failed] = np.nan
        extras[failed] = np.nan
        return out, extras, failed

    def _extras_of(self, d: Any) -> np.ndarray:
        """y = (xy of the forward body, cfrc_ext of bodies 1..) of an MjData after
        ``mj_rnePostConstraint``."""
        return np.concatenate([d.xpos[self.spec.forward_body, :2], d.cfrc_ext[1:].ravel()])

    def _read_extras(self, rows: np.ndarray, d: Any, extras: np.ndarray) -> None:
        for i in rows:
            self._batch.get_data(int(i), d)
            self.mj.mj_rnePostConstraint(self.model, d)
            extras[i] = self._extras_of(d)

    def _pooled(self, work, rows: np.ndarray, *args) -> None:
        """Run ``work(chunk, mjdata, *args)`` on contiguous chunks of ``rows``, one MjData and
        one thread each (MuJoCo releases the GIL inside its calls)."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.threads)
            self._datas = [self.mj.MjData(self.model) for _ in range(self.threads)]
        chunks = [c for c in np.array_split(rows, self.threads) if c.size]
        for f in [self._pool.submit(work, c, d, *args) for c, d in zip(chunks, self._datas)]:
            f.result()

    # ---- Jacobians ----

    def jacobians(self, physics: np.ndarray, ctrl: np.ndarray,
                  live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Jacobians of one environment step in state coordinates (zero for rows not live).

        Returns:
            ``(Jx [B, n + n_extras, n], Ju [B, n + n_extras, nu])``: derivatives of the next
            physics state and extras with respect to the physics state and the controls.
        """
        b, ndx, ny = physics.shape[0], self.ndx, self.n_extras
        J, Ju = np.zeros((b, ndx, ndx)), np.zeros((b, ndx, self.nu))
        Y, Yu = np.zeros((b, ny, ndx)), np.zeros((b, ny, self.nu))
        nxt = physics.copy()
        self._pooled(self._tangent_jacobians, np.flatnonzero(live),
                     physics, ctrl, J, Ju, Y, Yu, nxt)
        qpos = slice(self.qpos_at, self.qpos_at + self.nq)
        P, E = self._in_map(physics[:, qpos]), self._out_map(nxt[:, qpos])
        Jx = np.concatenate([E @ J @ P, Y @ P], axis=1)
        Jc = np.concatenate([E @ Ju, Yu], axis=1)
        Jx[~live], Jc[~live] = 0.0, 0.0
        return Jx, Jc

    def _tangent_jacobians(self, rows, d, physics, ctrl, J, Ju, Y, Yu, nxt) -> None:
        mj, m, ndx = self.mj, self.model, self.ndx
        A, Bk = np.zeros((ndx, ndx)), np.zeros((ndx, self.nu))
        for i in rows:
            mj.mj_setState(m, d, physics[i], self.state_spec)
            d.ctrl[:] = ctrl[i]
            j, ju = np.eye(ndx), np.zeros((ndx, self.nu))
            for k in range(self.frame_skip):
                if k == self.frame_skip - 1 and self.n_extras:
                    yx, yu = self._extras_jacobian(d)
                    Y[i], Yu[i] = yx @ j, yx @ ju + yu
                mj.mjd_transitionFD(m, d, FD_EPS, True, A, Bk, None, None)
                j, ju = A @ j, A @ ju + Bk
                mj.mj_step(m, d)
            J[i], Ju[i] = j, ju
            mj.mj_getState(m, d, nxt[i], self.state_spec)

    def _extras_jacobian(self, d: Any) -> tuple[np.ndarray, np.ndarray]:
        """Centered differences of y(x, u) = extras after mj_forward + mj_rnePostConstraint,
        in tangent coordinates: ``([n_extras, ndx], [n_extras, nu])``."""
        mj, m, nv, ndx = self.mj, self.model, self.nv, self.ndx
        nominal = np.zeros(mj.mj_stateSize(m, self.full_spec))
        mj.mj_getState(m, d, nominal, self.full_spec)
        cols = []
        for j in range(ndx + self.nu):
            ys = []
            for h in (FD_EPS, -FD_EPS):
                mj.mj_setState(m, d, nominal, self.full_spec)
                if j < nv:
                    dq = np.zeros(nv)
                    dq[j] = h
                    mj.mj_integratePos(m, d.qpos, dq, 1.0)
                elif j < 2 * nv:
                    d.qvel[j - nv] += h
                elif j < ndx:
                    d.act[j - 2 * nv] += h
                else:
                    d.ctrl[j - ndx] += h
                mj.mj_forward(m, d)
                mj.mj_rnePostConstraint(m, d)
                ys.append(self._extras_of(d))
            cols.append((ys[0] - ys[1]) / (2 * FD_EPS))
        mj.mj_setState(m, d, nominal, self.full_spec)
        jac = np.stack(cols, axis=1)
        return jac[:, :ndx], jac[:, ndx:]

    def _tangent_maps(self) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
        """Constant parts of P ``[ndx, n]`` and G ``[n, ndx]``, and (qpos, dof) addresses of the
        quaternions whose blocks depend on the state."""
        mj, m = self.mj, self.model
        P, E = np.zeros((self.ndx, self.n)), np.zeros((self.n, self.ndx))
        quats = []
        for j in range(m.njnt):
            qa, da, kind = self.qpos_at + m.jnt_qposadr[j], m.jnt_dofadr[j], int(m.jnt_type[j])
            if kind == int(mj.mjtJoint.mjJNT_FREE):
                P[da:da + 3, qa:qa + 3] = np.eye(3)
                E[qa:qa + 3, da:da + 3] = np.eye(3)
                quats.append((qa + 3, da + 3))
            elif kind == int(mj.mjtJoint.mjJNT_BALL):
                quats.append((qa, da))
            else:
                P[da, qa], E[qa, da] = 1.0, 1.0
        for i in range(self.nv):
            P[self.nv + i, self.qvel_at + i], E[self.qvel_at + i, self.nv + i] = 1.0, 1.0
        for i in range(self.na):
            P[2 * self.nv + i, self.act_at + i], E[self.act_at + i, 2 * self.nv + i] = 1.0, 1.0
        return P, E, quats

    def _in_map(self, qpos: np.ndarray) -> np.ndarray:
        P0, _, quats = self._maps
        P = np.repeat(P0[None], qpos.shape[0], axis=0)
        for qa, da in quats:
            q = qpos[:, qa - self.qpos_at:qa - self.qpos_at + 4]
            conj = q * np.array([1.0, -1.0, -1.0, -1.0])
            block = 2 * _left(conj)[:, 1:, :] / (q * q).sum(1)[:, None, None]
            P[:, da:da + 3, qa:qa + 4] = block
        return P

    def _out_map(self, qpos: np.ndarray) -> np.ndarray:
        _, E0, quats = self._maps
        E = np.repeat(E0[None], qpos.shape[0], axis=0)
        for qa, da in quats:
            q = qpos[:, qa - self.qpos_at:qa - self.qpos_at + 4]
            E[:, qa:qa + 4, da:da + 3] = 0.5 * _left(q)[:, :, 1:]
        return E

    def close(self) -> None:
        """Stop the Jacobian threads (the batch's own threads stop with it)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool, self._datas = None, []
