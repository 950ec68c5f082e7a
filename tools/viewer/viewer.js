// The `t3d view` page's script: bundled by tools/build_viewer.sh (esbuild) into
// threedistill/viewer/assets/viewer.bundle.js, which the Python side embeds in every page.
// It reads what the page embeds (threedistill/viewer/page.py): a JSON block #t3d-meta and base64 blocks
// #t3d-splats (a .spz file) and #t3d-mesh (a .glb file); nothing is fetched from the network.
import { SparkRenderer, SplatMesh } from "@sparkjsdev/spark";
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";

function embedded(id) {
  const el = document.getElementById(id);
  if (!el) return null;
  const text = atob(el.textContent.replace(/\s+/g, ""));
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

// The default camera: the project's orbit camera (threedistill/cameras.py orbit_cameras): at `radius` from
// `target`, azimuth from +Z toward +X, elevation toward +Y, vertical field of view `fovy` degrees, +Y up.
function orbitPosition(cam) {
  const az = THREE.MathUtils.degToRad(cam.azimuth);
  const el = THREE.MathUtils.degToRad(cam.elevation);
  const [tx, ty, tz] = cam.target;
  return new THREE.Vector3(
    tx + cam.radius * Math.cos(el) * Math.sin(az),
    ty + cam.radius * Math.sin(el),
    tz + cam.radius * Math.cos(el) * Math.cos(az),
  );
}

async function main() {
  const meta = JSON.parse(document.getElementById("t3d-meta").textContent);
  const state = { ready: false, mode: null, error: null, frames: 0 };
  window.t3dViewer = state;
  const mask = new URLSearchParams(location.hash.slice(1)).has("mask"); // silhouettes: black object on white

  const view = document.getElementById("view");
  const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  view.appendChild(renderer.domElement);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(mask ? "#ffffff" : meta.background);
  const cam = meta.camera;
  const camera = new THREE.PerspectiveCamera(cam.fovy, 1, cam.near, cam.far);
  const home = () => {
    camera.position.copy(orbitPosition(cam));
    camera.up.set(0, 1, 0);
    controls.target.set(...cam.target);
    controls.update();
  };
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.enableDamping = false;
  home();

  const spark = new SparkRenderer({ renderer });
  scene.add(spark);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x888888, 1.2));
  const sun = new THREE.DirectionalLight(0xffffff, 1.5);
  sun.position.set(1, 2, 3);
  scene.add(sun);

  const objects = {};
  const splatBytes = embedded("t3d-splats");
  if (splatBytes) {
    const splats = new SplatMesh({ fileBytes: splatBytes, fileType: "spz", fileName: "model.spz" });
    await splats.initialized;
    if (mask) splats.recolor = new THREE.Color(0, 0, 0);
    objects.splats = splats;
    scene.add(splats);
  }
  const meshBytes = embedded("t3d-mesh");
  if (meshBytes) {
    const gltf = await new GLTFLoader().parseAsync(meshBytes.buffer, "");
    if (mask) {
      const black = new THREE.MeshBasicMaterial({ color: 0x000000, side: THREE.DoubleSide });
      gltf.scene.traverse((o) => {
        if (o.isMesh) o.material = black;
      });
    }
    objects.mesh = gltf.scene;
    scene.add(gltf.scene);
  }

  const buttons = document.querySelectorAll("[data-mode]");
  const show = (mode) => {
    if (!(mode in objects)) return false;
    for (const [name, obj] of Object.entries(objects)) obj.visible = name === mode;
    for (const b of buttons) b.classList.toggle("on", b.dataset.mode === mode);
    state.mode = mode;
    return true;
  };
  for (const b of buttons) {
    b.disabled = !(b.dataset.mode in objects);
    b.addEventListener("click", () => show(b.dataset.mode));
  }
  document.getElementById("home")?.addEventListener("click", home);
  const hashMode = new URLSearchParams(location.hash.slice(1)).get("mode");
  const first = meta.default_mode in objects ? meta.default_mode : "splats" in objects ? "splats" : "mesh";
  show(hashMode in objects ? hashMode : first);
  state.show = show;
  state.home = home;

  const resize = () => {
    const w = view.clientWidth;
    const h = view.clientHeight;
    renderer.setSize(w, h, false);
    renderer.domElement.style.width = `${w}px`;
    renderer.domElement.style.height = `${h}px`;
    camera.aspect = w / Math.max(h, 1);
    camera.updateProjectionMatrix();
  };
  window.addEventListener("resize", resize);
  resize();
  renderer.setAnimationLoop(() => {
    controls.update();
    renderer.render(scene, camera);
    state.frames += 1;
    // Spark sorts the splats in a worker: a few frames after loading, the picture is complete.
    if (state.frames >= 10) state.ready = true;
  });
}

main().catch((err) => {
  console.error(err);
  window.t3dViewer = { ...(window.t3dViewer || {}), error: String(err && err.stack ? err.stack : err) };
  const box = document.getElementById("error");
  if (box) box.textContent = `viewer error: ${err}`;
});
